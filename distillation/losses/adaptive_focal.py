"""Focal loss whose gamma adapts, per class, to how hard that class currently is.

A fixed gamma focuses equally on every class. Here each class c has its own gamma_c, driven by
a running measure of how well the student currently predicts it:

    pbar_c  <- m * pbar_c + (1 - m) * mean_{i in batch, y_i = c} p_t,i    (classes in the batch)
    gamma_c  = clamp(gamma_min + (gamma_max - gamma_min) * (1 - pbar_c), gamma_min, gamma_max)
    L        = sum_i a_i * alpha_{y_i} * (1 - p_t,i)^gamma_{y_i} * (-log p_t,i) / sum_i alpha_{y_i}
               + alpha * sum_{teacher} s_i / B                     (soft term only if alpha > 0)

p_t,i = softmax(z_i)[y_i] is the student's probability of the true class (detached), m the
EMA momentum. A class the student keeps getting wrong (pbar_c -> 0) moves toward gamma_max,
so its many still-easy windows are down-weighted harder and the hard ones dominate; a class
it has mastered (pbar_c -> 1) relaxes toward gamma_min, close to plain cross-entropy, so it is
not ignored. Rare classes tend to be the hard ones, so this also tracks the imbalance the
student actually feels rather than the raw counts. Because pbar_c is in [0, 1], gamma_c always
lies in [gamma_min, gamma_max]; the clamp only guards against rounding.

Details:
- pbar_c starts where gamma_c = ``gamma_init`` (clamped to the bounds), i.e. the loss starts as
  an ordinary focal loss and drifts as evidence accumulates.
- Only classes present in a batch are updated (one EMA step per batch whatever the class's
  count, computed with ``scatter_add``/``bincount``, no Python loop over items).
- Updates happen only in training mode (``loss.train()``) and under ``torch.no_grad()``;
  ``loss.eval()`` or ``with loss.frozen_statistics():`` uses gamma without changing it. gamma
  for a batch is read *before* that batch updates the statistics.
- The statistics are buffers: they move with ``.to(device)`` and are saved in ``state_dict()``.
- With alpha > 0 the soft term and missing-teacher rule are those of ``distillation.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from distillation.losses.distillation import check_distillation_args, combine_hard_soft
from distillation.losses.focal import check_gamma, focal_terms
from distillation.losses.hard import as_weight_tensor


class AdaptiveFocalLoss(nn.Module):
    """Focal loss with per-class gamma from an EMA of the true-class probability."""

    def __init__(
        self,
        n_classes: int,
        gamma_min: float = 0.5,
        gamma_max: float = 5.0,
        momentum: float = 0.9,
        gamma_init: float = 2.0,
        class_weights: torch.Tensor | Sequence[float] | None = None,
        alpha: float = 0.0,
        temperature: float = 4.0,
        soft_target: str = "softmax",
    ):
        super().__init__()
        if int(n_classes) < 2:
            raise ValueError(f"AdaptiveFocalLoss needs n_classes >= 2, got {n_classes}")
        gamma_min = check_gamma(gamma_min, "gamma_min")
        gamma_max = check_gamma(gamma_max, "gamma_max")
        if gamma_max < gamma_min:
            raise ValueError(f"gamma_max ({gamma_max}) must be >= gamma_min ({gamma_min})")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"Adaptive focal momentum must be in [0, 1), got {momentum}")
        check_distillation_args(alpha, temperature, soft_target)
        self.n_classes = int(n_classes)
        self.gamma_min = gamma_min
        self.gamma_max = gamma_max
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.soft_target = soft_target
        self.update_statistics = True
        span = gamma_max - gamma_min
        start = min(max(float(gamma_init), gamma_min), gamma_max)
        initial_pt = 1.0 - (start - gamma_min) / span if span > 0 else 1.0
        self.register_buffer("ema_pt", torch.full((self.n_classes,), initial_pt))
        self.register_buffer("batches_seen", torch.zeros(self.n_classes, dtype=torch.long))
        weights = as_weight_tensor(class_weights)
        if weights is not None and weights.numel() != self.n_classes:
            raise ValueError(
                f"Got {weights.numel()} class weights for {self.n_classes} classes; give one "
                "weight per class (species..., no_birds)."
            )
        self.register_buffer("class_weights", weights)

    @property
    def gamma(self) -> torch.Tensor:
        """Current gamma_c for every class, shape (C,)."""
        span = self.gamma_max - self.gamma_min
        return (self.gamma_min + span * (1.0 - self.ema_pt)).clamp(self.gamma_min, self.gamma_max)

    @contextmanager
    def frozen_statistics(self) -> Iterator[None]:
        """Compute the loss without updating the statistics (e.g. mixup's partner term)."""
        previous, self.update_statistics = self.update_statistics, False
        try:
            yield
        finally:
            self.update_statistics = previous

    @torch.no_grad()
    def _update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        p_t = torch.softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
        sums = torch.zeros_like(self.ema_pt).scatter_add_(0, labels, p_t.to(self.ema_pt.dtype))
        counts = torch.bincount(labels, minlength=self.n_classes)
        present = counts > 0
        batch_mean = sums / counts.clamp_min(1).to(sums.dtype)
        updated = self.momentum * self.ema_pt + (1.0 - self.momentum) * batch_mean
        self.ema_pt.copy_(torch.where(present, updated, self.ema_pt))
        self.batches_seen.add_(present.long())

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labels = batch["label"]
        if logits.shape[1] != self.n_classes:
            raise ValueError(
                f"AdaptiveFocalLoss was built for {self.n_classes} classes but got logits "
                f"with {logits.shape[1]}"
            )
        gammas = self.gamma.to(logits.dtype)[labels]
        terms, weights = focal_terms(logits, labels, gammas, self.class_weights)
        if self.training and self.update_statistics:
            self._update(logits.detach(), labels)
        return combine_hard_soft(
            terms,
            weights,
            logits,
            batch,
            alpha=self.alpha,
            temperature=self.temperature,
            soft_target=self.soft_target,
        )

    def extra_repr(self) -> str:
        return (
            f"n_classes={self.n_classes}, gamma_min={self.gamma_min}, "
            f"gamma_max={self.gamma_max}, momentum={self.momentum}, alpha={self.alpha}, "
            f"temperature={self.temperature}, soft_target='{self.soft_target}'"
        )

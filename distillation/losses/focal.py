"""Focal loss (Lin et al. 2017) and its distillation variant.

    FL_i = -alpha_{y_i} * (1 - p_t,i)^gamma * log p_t,i,   p_t,i = softmax(z_i)[y_i]
    L    = sum_i FL_i / sum_i alpha_{y_i}

alpha_c are the per-class weights (``loss.class_weights``); the factor (1 - p_t)^gamma
down-weights windows the model already gets right, so training time goes to the hard and rare
ones. The sum is normalised by the summed class weights, as torch's weighted cross-entropy is,
so ``gamma = 0`` gives exactly ``F.cross_entropy(logits, y, weight=alpha)``.

``FocalDistillationLoss`` swaps the cross-entropy hard term of ``DistillationLoss`` for the
focal one and keeps the same soft term and missing-teacher rule (``distillation.py``):

    L = sum_i a_i * FL_i / sum_i alpha_{y_i} + alpha * sum_{teacher} s_i / B
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distillation.losses.distillation import check_distillation_args, combine_hard_soft
from distillation.losses.hard import as_weight_tensor, item_weights, weighted_mean

# 1 - p_t is floored here: for gamma < 1 the derivative of (1 - p)^gamma is infinite at p = 1,
# and autograd would turn inf * 0 into NaN; the floor changes the loss by < 1e-12.
_MIN_ERROR = 1e-12


def focal_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float | torch.Tensor,
    class_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item ``(FL_i, alpha_{y_i})``; ``gamma`` is a number or a per-item tensor (B,)."""
    weights = item_weights(class_weights, labels, logits.shape[1])
    log_pt = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    error = (-torch.expm1(log_pt)).clamp_min(_MIN_ERROR)  # 1 - p_t, accurate near p_t = 1
    modulation = error.pow(gamma)
    return weights * modulation * (-log_pt), weights


def check_gamma(gamma: float, name: str = "gamma") -> float:
    if not float(gamma) >= 0.0:
        raise ValueError(f"Focal loss {name} must be >= 0, got {gamma}")
    return float(gamma)


class FocalLoss(nn.Module):
    """Class-weighted focal loss on the hard labels (module docstring)."""

    def __init__(
        self, gamma: float = 2.0, class_weights: torch.Tensor | Sequence[float] | None = None
    ):
        super().__init__()
        self.gamma = check_gamma(gamma)
        self.register_buffer("class_weights", as_weight_tensor(class_weights))

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return weighted_mean(*focal_terms(logits, batch["label"], self.gamma, self.class_weights))

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


class FocalDistillationLoss(nn.Module):
    """``(1 - alpha) * focal + alpha * T^2 * soft divergence`` (module docstring)."""

    def __init__(
        self,
        alpha: float = 0.5,
        temperature: float = 4.0,
        gamma: float = 2.0,
        soft_target: str = "softmax",
        class_weights: torch.Tensor | Sequence[float] | None = None,
    ):
        super().__init__()
        check_distillation_args(alpha, temperature, soft_target)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.gamma = check_gamma(gamma)
        self.soft_target = soft_target
        self.register_buffer("class_weights", as_weight_tensor(class_weights))

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        terms, weights = focal_terms(logits, batch["label"], self.gamma, self.class_weights)
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
            f"alpha={self.alpha}, temperature={self.temperature}, gamma={self.gamma}, "
            f"soft_target='{self.soft_target}'"
        )

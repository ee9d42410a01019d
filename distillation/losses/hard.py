"""Hard-label cross-entropy with optional per-class weights, as per-item terms.

Every loss in this package reduces the same way torch's weighted cross-entropy does:

    L = sum_i w_{y_i} * l_i / sum_i w_{y_i}

so a loss returns two per-item tensors, the weighted terms ``w_{y_i} * l_i`` and the weights
``w_{y_i}``, and the caller decides how to reduce them (the distillation losses scale the hard
term of each item by its own factor before dividing; see ``distillation.py``). Dividing by the
summed weights rather than by B keeps the loss on the same scale whatever the weights are, and
makes ``FocalLoss(gamma=0)`` equal to ``F.cross_entropy(weight=w)`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def as_weight_tensor(class_weights: torch.Tensor | Sequence[float] | None) -> torch.Tensor | None:
    """Class weights as a 1-D float tensor (or None); rejects non-finite or negative values."""
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32).detach().clone()
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"class_weights must be a 1-D list of numbers, got shape {weights.shape}")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"class_weights must be finite and >= 0, got {weights.tolist()}")
    return weights


def item_weights(
    class_weights: torch.Tensor | None, labels: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """w_{y_i} for every item (ones when unweighted), checking the weight count against C."""
    if class_weights is None:
        return torch.ones(labels.shape[0], dtype=torch.float32, device=labels.device)
    if class_weights.numel() != n_classes:
        raise ValueError(
            f"The loss has {class_weights.numel()} class weights but the model outputs "
            f"{n_classes} classes; give one weight per class (species..., no_birds)."
        )
    return class_weights.to(labels.device)[labels]


def cross_entropy_terms(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item ``(w_{y_i} * -log softmax(z_i)[y_i], w_{y_i})``."""
    weights = item_weights(class_weights, labels, logits.shape[1])
    nll = F.cross_entropy(logits, labels, reduction="none")
    return weights * nll, weights


def weighted_mean(terms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(terms) / sum(weights); 0 (still attached to the graph) for an all-zero weight sum."""
    return terms.sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


class CrossEntropyLoss(nn.Module):
    """Plain (optionally class-weighted) cross-entropy on the hard labels.

    ``forward(logits, batch)`` reads only ``batch["label"]``; the weights are a buffer so they
    follow ``.to(device)`` and appear in ``state_dict()``.
    """

    def __init__(self, class_weights: torch.Tensor | Sequence[float] | None = None):
        super().__init__()
        self.register_buffer("class_weights", as_weight_tensor(class_weights))

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return weighted_mean(*cross_entropy_terms(logits, batch["label"], self.class_weights))

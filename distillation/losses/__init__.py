"""Training losses: ``loss(logits, batch) -> scalar`` modules, picked by ``loss.type``.

=====================  ===========================================  ====================
``loss.type``          loss                                         needs teacher logits
=====================  ===========================================  ====================
``cross_entropy``      class-weighted cross-entropy (``hard.py``)   no
``distillation``       (1-a)·CE + a·T²·soft (``distillation.py``)   yes
``focal``              a_t·(1-p_t)^gamma·CE (``focal.py``)          no
``focal_distillation`` (1-a)·focal + a·T²·soft (``focal.py``)       yes
``adaptive_focal``     per-class gamma (``adaptive_focal.py``)      only if alpha > 0
=====================  ===========================================  ====================

Every loss is an ``nn.Module`` (class weights and adaptive statistics are buffers, so they
follow ``.to(device)``) whose ``forward(logits, batch)`` reads ``batch["label"]`` and, when
distilling, ``batch["teacher_logits"]`` (raw teacher logits, student class order, no_birds
last) and ``batch["has_teacher"]``. Class weights come from ``class_weights.py``.

Keys read from the ``loss`` config by :func:`build_loss` (defaults in brackets): ``type``,
``gamma`` [2.0] (focal losses; also the starting gamma of ``adaptive_focal``), ``soft_target``
[softmax] (``softmax`` | ``sigmoid``), ``gamma_min`` [0.5], ``gamma_max`` [5.0] and
``gamma_momentum`` [0.9] (``adaptive_focal``). alpha and T come from the caller (the
distillation settings).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from distillation.losses.adaptive_focal import AdaptiveFocalLoss
from distillation.losses.class_weights import (
    ClassWeightError,
    ClassWeights,
    effective_number_weights,
    format_class_weights,
    inverse_frequency_weights,
    resolve_class_weights,
)
from distillation.losses.distillation import SOFT_TARGETS, DistillationLoss
from distillation.losses.focal import FocalDistillationLoss, FocalLoss
from distillation.losses.hard import CrossEntropyLoss

__all__ = [
    "LOSS_TYPES",
    "SOFT_TARGETS",
    "AdaptiveFocalLoss",
    "ClassWeightError",
    "ClassWeights",
    "CrossEntropyLoss",
    "DistillationLoss",
    "FocalDistillationLoss",
    "FocalLoss",
    "build_loss",
    "effective_number_weights",
    "format_class_weights",
    "inverse_frequency_weights",
    "needs_teacher",
    "resolve_class_weights",
]

LOSS_TYPES: tuple[str, ...] = (
    "cross_entropy",
    "distillation",
    "focal",
    "focal_distillation",
    "adaptive_focal",
)

_ALWAYS_NEEDS_TEACHER = frozenset({"distillation", "focal_distillation"})


def _check_type(loss_type: str) -> str:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss.type '{loss_type}'; valid types: {', '.join(LOSS_TYPES)}")
    return loss_type


def needs_teacher(loss_type: str, alpha: float = 0.0) -> bool:
    """Whether batches must carry ``teacher_logits`` (``adaptive_focal`` only with alpha > 0)."""
    _check_type(loss_type)
    if loss_type == "adaptive_focal":
        return float(alpha) > 0.0
    return loss_type in _ALWAYS_NEEDS_TEACHER


def build_loss(
    loss_cfg: Mapping,
    *,
    class_weights: torch.Tensor | None,
    n_classes: int,
    alpha: float,
    temperature: float,
) -> nn.Module:
    """The loss module for ``loss_cfg["type"]`` (keys and defaults in the module docstring)."""
    loss_type = _check_type(str(loss_cfg.get("type", "cross_entropy")))
    if class_weights is not None and len(class_weights) != n_classes:
        raise ClassWeightError(
            f"Got {len(class_weights)} class weights for {n_classes} classes (species..., no_birds)"
        )
    gamma = float(loss_cfg.get("gamma", 2.0))
    soft_target = str(loss_cfg.get("soft_target", "softmax"))
    if loss_type == "cross_entropy":
        return CrossEntropyLoss(class_weights)
    if loss_type == "distillation":
        return DistillationLoss(alpha, temperature, soft_target, class_weights)
    if loss_type == "focal":
        return FocalLoss(gamma, class_weights)
    if loss_type == "focal_distillation":
        return FocalDistillationLoss(alpha, temperature, gamma, soft_target, class_weights)
    return AdaptiveFocalLoss(
        n_classes,
        gamma_min=float(loss_cfg.get("gamma_min", 0.5)),
        gamma_max=float(loss_cfg.get("gamma_max", 5.0)),
        momentum=float(loss_cfg.get("gamma_momentum", 0.9)),
        gamma_init=gamma,
        class_weights=class_weights,
        alpha=alpha,
        temperature=temperature,
        soft_target=soft_target,
    )

"""Embedding distillation and windows without a hard label.

BirdNET's 1024-d embedding (what its output layer reads) holds far more of what it knows
than the handful of target logits: a logistic regression on it tells species apart from a
few recordings. The student's projection head (``model.embedding_dim``) learns to reproduce
it (FitNets; S-SONDO distils audio models from the embedding alone), which shapes the
backbone that the classifier head reads.

:class:`TeacherTargetsLoss` combines three terms over a batch that may mix labelled windows
(a species or no_birds) and windows with teacher targets only (``label == -1``: every other
window of a training recording, unlabelled audio, augmented views):

    L = L_base(labelled windows)                                     (the configured loss)
      + alpha * mean over teacher-only windows with teacher logits of s_i    (logit KD)
      + embedding_weight * mean over windows with a teacher embedding of e_i

``L_base`` is the configured loss (cross-entropy, distillation, focal...) on the labelled
windows alone, so its hard and soft terms keep their meaning; ``s_i`` is the same T²-scaled
soft term the distillation losses use; ``e_i`` is ``embedding_loss`` between the student's
projection and BirdNET's embedding:

``cosine`` (default)
    ``1 - cos(student, teacher)``: the direction only. BirdNET's embedding is a ReLU-pooled
    feature vector whose norm follows loudness more than content.
``mse``
    mean squared error after scaling both to unit norm (the chord distance, ~cosine near the
    optimum but with a gradient that does not vanish for opposite vectors).
``smooth_l1``
    Huber loss on the raw vectors (matches magnitudes too).

With ``logit_weight`` (``distillation.birdnet_logit_weight``) a fourth term reads the
projection through BirdNET's own output layer (logits = W e + b over all 6522 classes, the
weights taken from the model file) and matches the teacher's class distribution there:
``T^2 * KL(softmax(W e_teacher + b) / T || softmax(W e_student + b) / T)``. The cosine treats
every direction of the embedding alike; this term weighs them by how much they change what
BirdNET hears (which birds, which non-event sounds), and also fixes the projection's scale,
which the cosine leaves free. The student's projection is de-standardised first when the
target is standardised.

With ``contrastive_weight`` (``distillation.embedding_contrastive_weight``) a relational term
compares each window with the others of its batch: the student's projection of window ``i``
is scored against the teacher embeddings of every window ``j`` of the batch
(``cos(s_i, t_j) / tau``), and that distribution over ``j`` learns the teacher's own
(``softmax_j cos(t_i, t_j) / tau``): which windows BirdNET hears as alike, rather than where
each window sits in its 1024 dimensions (contrastive representation distillation, Tian et
al. 2020). The target peaks on ``i`` itself and spreads over windows BirdNET hears alike (the
overlapping windows of one recording), so those are not pushed apart. Cross-entropy is linear
in its target, so mixup's two calls give the mixed window a target of both partners.

In the pre-training stage (``pretrain=True``) labels are ignored: every window is
teacher-only.

With ``standardize`` (``distillation.embedding_standardize``) the target is BirdNET's
embedding minus its mean over the training windows, divided by its per-dimension standard
deviation. The raw embedding is non-negative (ReLU, then pooling), so every pair of windows
already has a cosine of ~0.7 to the mean direction: a student that outputs that constant
direction scores 0.69 and learns nothing that tells windows apart (measured on iberian_birds:
validation cosine flat at 0.69 from the first epoch). Centred and scaled, the target is the
variation between windows, which is what a linear classifier on the embedding reads.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distillation.losses.distillation import soft_loss_terms, teacher_inputs

EMBEDDING_LOSSES: tuple[str, ...] = ("cosine", "mse", "smooth_l1")
IGNORE_LABEL = -1


def embedding_loss_terms(student: torch.Tensor, teacher: torch.Tensor,
                         kind: str = "cosine") -> torch.Tensor:
    """Per-item embedding loss (B,) between ``student`` and ``teacher`` (B, D)."""
    teacher = teacher.detach().to(student.dtype)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student, teacher, dim=1, eps=1e-6)
    if kind == "mse":
        diff = F.normalize(student, dim=1, eps=1e-6) - F.normalize(teacher, dim=1, eps=1e-6)
        return diff.pow(2).sum(dim=1)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(student, teacher, reduction="none").mean(dim=1)
    raise ValueError(f"distillation.embedding_loss must be one of {EMBEDDING_LOSSES}, got '{kind}'")


def contrastive_terms(student: torch.Tensor, teacher: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Per-item relational loss (B,) over the batch (module docstring): cross-entropy between
    ``softmax_j cos(teacher_i, teacher_j) / T`` and ``softmax_j cos(student_i, teacher_j) / T``."""
    student_unit = F.normalize(student.float(), dim=1, eps=1e-6)
    teacher_unit = F.normalize(teacher.detach().float(), dim=1, eps=1e-6)
    student_scores = student_unit @ teacher_unit.T / temperature
    target = torch.softmax(teacher_unit @ teacher_unit.T / temperature, dim=1)
    return -(target * torch.log_softmax(student_scores, dim=1)).sum(dim=1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # 0 (still attached to the graph) when no item qualifies.
    return (values * mask).sum() / mask.sum().clamp_min(1)


def select(batch: dict, mask: torch.Tensor) -> dict:
    """The items of ``batch`` where ``mask`` holds (tensors with a batch dimension only)."""
    n = mask.shape[0]
    return {k: v[mask] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v
            for k, v in batch.items()}


class TeacherTargetsLoss(nn.Module):
    """``base(labelled) + alpha * KD(teacher-only) + embedding_weight * E(all)`` (docstring)."""

    def __init__(
        self,
        base: nn.Module | None,
        *,
        alpha: float,
        temperature: float,
        soft_target: str = "softmax",
        embedding_weight: float = 0.0,
        embedding_loss: str = "cosine",
        pretrain: bool = False,
        embedding_mean: torch.Tensor | None = None,
        embedding_scale: torch.Tensor | None = None,
        logit_weight: float = 0.0,
        logit_temperature: float = 2.0,
        output_layer: tuple[torch.Tensor, torch.Tensor] | None = None,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
    ):
        super().__init__()
        if embedding_loss not in EMBEDDING_LOSSES:
            raise ValueError(f"distillation.embedding_loss must be one of {EMBEDDING_LOSSES}, "
                             f"got '{embedding_loss}'")
        if embedding_weight < 0:
            raise ValueError(f"distillation.embedding_weight must be >= 0, got {embedding_weight}")
        self.base = base
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.soft_target = soft_target
        self.embedding_weight = float(embedding_weight)
        self.embedding_loss = embedding_loss
        if logit_weight < 0:
            raise ValueError(f"distillation.birdnet_logit_weight must be >= 0, got {logit_weight}")
        if logit_weight > 0 and output_layer is None:
            raise ValueError("distillation.birdnet_logit_weight > 0 needs BirdNET's output layer")
        if logit_temperature <= 0:
            raise ValueError("distillation.birdnet_logit_temperature must be > 0, "
                             f"got {logit_temperature}")
        if contrastive_weight < 0:
            raise ValueError("distillation.embedding_contrastive_weight must be >= 0, "
                             f"got {contrastive_weight}")
        if contrastive_temperature <= 0:
            raise ValueError("distillation.embedding_contrastive_temperature must be > 0, "
                             f"got {contrastive_temperature}")
        self.contrastive_weight = float(contrastive_weight)
        self.contrastive_temperature = float(contrastive_temperature)
        self.pretrain = pretrain
        standardize = embedding_mean is not None and embedding_scale is not None
        self.register_buffer("embedding_mean", embedding_mean if standardize else None)
        self.register_buffer("embedding_scale", embedding_scale if standardize else None)
        self.logit_weight = float(logit_weight)
        self.logit_temperature = float(logit_temperature)
        # BirdNET's output layer: 27 MB that any run can rebuild from the model file, so it
        # stays out of state dicts (persistent=False).
        weight, bias = output_layer if logit_weight > 0 else (None, None)
        self.register_buffer("output_weight", weight, persistent=False)
        self.register_buffer("output_bias", bias, persistent=False)
        # The trainer asks the model for its projection only when a loss reads it.
        self.needs_student_embedding = (self.embedding_weight > 0 or self.logit_weight > 0
                                        or self.contrastive_weight > 0)

    def embedding_target(self, teacher: torch.Tensor) -> torch.Tensor:
        """What the projection head learns: BirdNET's embedding, standardised when set."""
        if self.embedding_mean is None:
            return teacher
        return (teacher.float() - self.embedding_mean) / self.embedding_scale

    def raw_embedding(self, standardized: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`embedding_target`: the projection in BirdNET's own embedding space."""
        if self.embedding_mean is None:
            return standardized
        return standardized * self.embedding_scale + self.embedding_mean

    def birdnet_logit_terms(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Per-item ``T^2 * KL`` (B,) between BirdNET's class distributions read from the
        teacher's raw embedding and from the student's (standardised) projection."""
        student_logits = F.linear(self.raw_embedding(student), self.output_weight,
                                  self.output_bias)
        with torch.no_grad():
            teacher_logits = F.linear(teacher.float(), self.output_weight, self.output_bias)
        return soft_loss_terms(student_logits, teacher_logits, self.logit_temperature, "softmax")

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labels = torch.as_tensor(batch["label"], device=logits.device)
        labelled = (labels >= 0) & (not self.pretrain)
        total = logits.sum() * 0.0
        if self.base is not None and bool(labelled.any()):
            total = total + self.base(logits[labelled], select(batch, labelled))
        if self.alpha > 0 and "teacher_logits" in batch:
            teacher, has_teacher = teacher_inputs(batch, logits)
            soft = soft_loss_terms(logits, teacher, self.temperature, self.soft_target)
            total = total + self.alpha * _masked_mean(soft, has_teacher & ~labelled)
        if self.needs_student_embedding:
            if "student_embedding" not in batch:
                raise KeyError("distillation.embedding_weight > 0 needs the model's projection "
                               "head: set model.embedding_dim")
            if "teacher_embedding" not in batch:
                raise KeyError("distillation.embedding_weight > 0 but the batches carry no "
                               "teacher embedding (soft labels without embeddings?)")
            student = batch["student_embedding"].float()
            raw_teacher = torch.as_tensor(batch["teacher_embedding"], device=student.device)
            has = torch.as_tensor(batch["has_embedding"], device=student.device).bool()
            if self.embedding_weight > 0:
                teacher = self.embedding_target(raw_teacher)
                terms = embedding_loss_terms(student, teacher.float(), self.embedding_loss)
                total = total + self.embedding_weight * _masked_mean(terms, has)
            if self.logit_weight > 0:
                terms = self.birdnet_logit_terms(student, raw_teacher)
                total = total + self.logit_weight * _masked_mean(terms, has)
            if self.contrastive_weight > 0 and int(has.sum()) >= 2:
                # Only windows with a teacher embedding take part, as anchors and as others.
                terms = contrastive_terms(student[has], self.embedding_target(raw_teacher[has]),
                                          self.contrastive_temperature)
                total = total + self.contrastive_weight * terms.mean()
        return total

    def frozen_statistics(self):
        """Mixup's partner term must not update an adaptive base loss's class statistics."""
        freeze = getattr(self.base, "frozen_statistics", None)
        return freeze() if freeze is not None else contextlib.nullcontext()

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, embedding_weight={self.embedding_weight}, "
                f"embedding_loss='{self.embedding_loss}', logit_weight={self.logit_weight}, "
                f"contrastive_weight={self.contrastive_weight}, "
                f"pretrain={self.pretrain}, "
                f"standardized={self.embedding_mean is not None}")


def embedding_statistics(embeddings: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (floored, so a dimension that never fires
    is not blown up) over the rows of all ``embeddings`` arrays (n_i, D)."""
    rows = np.concatenate([np.asarray(e, np.float64) for e in embeddings if len(e)])
    mean = rows.mean(axis=0)
    scale = np.maximum(rows.std(axis=0), 1e-3 + 0.05 * rows.std(axis=0).mean())
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)

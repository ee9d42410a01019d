"""Knowledge distillation from BirdNET: ``(1 - alpha) * L_hard + alpha * L_soft``.

Teacher signal
--------------
``batch["teacher_logits"]`` holds, per window, C raw teacher logits in the student's class
order: BirdNET's logit for each target species, then a no_birds logit (``logit(1 - p_bird)``,
see ``birdnet.teacher.NO_BIRDS_SIGNAL_DEFINITION``). BirdNET's outputs are independent
sigmoids, ``P(class c present) = sigmoid(z_c)``, not one softmax, so a soft target over the
C classes has to be *chosen*. Two are offered (``loss.soft_target``):

``softmax`` (default)
    The C logits are treated as one logit vector and softened by the temperature T:

        p_c = softmax(z_teacher / T)_c  proportional to  exp(z_c / T)
        L_soft,i = T^2 * KL(p || softmax(z_student / T))

    Why this is a sound target for independent sigmoids: if exactly one of the C classes is
    present, the independent-sigmoid model gives
    ``P(only c) ∝ sigmoid(z_c) * prod_{k != c} (1 - sigmoid(z_k)) ∝ exp(z_c)``, i.e. exactly
    ``softmax(z)``; T > 1 flattens it to ``odds_c^(1/T)``. It is built from the logits
    themselves, never from probabilities pushed through a second softmax (which would squash
    every target toward uniform).

``sigmoid``
    Keeps BirdNET's own independent-binary view: every class is its own Bernoulli target,

        p_c = sigmoid(z_teacher,c / T),  q_c = sigmoid(z_student,c / T)
        L_soft,i = T^2 * mean_c [ BCE(q_c, p_c) - H(p_c) ]  =  T^2 * mean_c KL(Ber(p_c) || Ber(q_c))

    Subtracting the target entropy H(p_c) does not change any gradient; it only makes the
    term 0 when the student matches the teacher, like the softmax KL, so logged losses of the
    two options are comparable. The mean over classes (as ``BCEWithLogitsLoss`` does) keeps
    the gradient per logit of the same order as the softmax KL's (both ~ 1/C); at large T it
    is about 1/4 of it (sigmoid'(0) = 1/4), so the same pull may need a larger alpha.

T^2 scaling (Hinton et al. 2015): d L_soft / d z_student is ~ (1/T) * (q - p) and, for large
T, q - p ~ (z_student - z_teacher) / T, so the unscaled soft gradient shrinks like 1/T^2.
Multiplying by T^2 keeps its magnitude roughly constant across temperatures, so alpha keeps
the same meaning whatever T is.

Hard term and missing teachers
------------------------------
L_hard is class-weighted cross-entropy (``hard.py``). ``batch["has_teacher"]`` marks windows
without soft labels; they contribute the hard loss only, at full weight 1 (not 1 - alpha), and
no soft loss: giving them 1 - alpha would silently down-weight exactly the items that have no
other signal. Per item:

    a_i = (1 - alpha) if has_teacher_i else 1
    L = sum_i a_i * w_{y_i} * h_i / sum_i w_{y_i}  +  alpha * sum_{i: has_teacher_i} s_i / B

The soft sum is divided by the batch size B, so each item's contribution does not depend on
how many other items in its batch have a teacher (dividing by the number of teacher items
would make the lone teacher item of a mostly teacher-less batch count up to B times more).
With every teacher present this is exactly ``(1 - alpha) * CE_w + alpha * mean_i s_i``; with
none it is ``CE_w``. The soft term is not class-weighted: the teacher's distribution already
says how much each class matters for that window.

Mixup mixes losses, ``lam * L(batch) + (1 - lam) * L(partner)``; both terms are linear in
their targets (one-hot and teacher distribution), so that equals distilling toward the mixed
targets. No extra handling is needed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distillation.losses.hard import as_weight_tensor, cross_entropy_terms

SOFT_TARGETS: tuple[str, ...] = ("softmax", "sigmoid")


def check_distillation_args(alpha: float, temperature: float, soft_target: str) -> None:
    """Clear errors for settings that would make the loss meaningless."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"Distillation alpha must be in [0, 1], got {alpha}")
    if not float(temperature) > 0.0:
        raise ValueError(f"Distillation temperature must be > 0, got {temperature}")
    if soft_target not in SOFT_TARGETS:
        raise ValueError(
            f"loss.soft_target must be one of {', '.join(SOFT_TARGETS)}; got '{soft_target}'"
        )


def soft_loss_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    soft_target: str = "softmax",
) -> torch.Tensor:
    """Per-item soft loss ``s_i`` (shape (B,)), T^2-scaled; formulas in the module docstring."""
    t = float(temperature)
    student = student_logits / t
    teacher = teacher_logits.detach().to(student.dtype) / t
    if soft_target == "softmax":
        log_q = F.log_softmax(student, dim=1)
        log_p = F.log_softmax(teacher, dim=1)
        divergence = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)
    elif soft_target == "sigmoid":
        p = torch.sigmoid(teacher)
        cross = F.binary_cross_entropy_with_logits(student, p, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(teacher, p, reduction="none")
        divergence = (cross - entropy).mean(dim=1)
    else:
        raise ValueError(f"soft_target must be one of {SOFT_TARGETS}, got '{soft_target}'")
    return divergence * (t * t)


def teacher_inputs(batch: dict, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher logits with missing rows zeroed, has_teacher mask) checked against ``logits``."""
    if "teacher_logits" not in batch:
        raise KeyError(
            "This loss distils from the teacher but the batch has no 'teacher_logits'; use a "
            "distillation dataset (soft labels) or a loss type that needs no teacher."
        )
    teacher = torch.as_tensor(batch["teacher_logits"], device=logits.device)
    if teacher.shape != logits.shape:
        raise ValueError(
            f"teacher_logits have shape {tuple(teacher.shape)} but the student's logits have "
            f"shape {tuple(logits.shape)}; both must be (batch, species... + no_birds)."
        )
    mask = batch.get("has_teacher")
    if mask is None:
        mask = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    else:
        mask = torch.as_tensor(mask, device=logits.device).to(torch.bool).reshape(-1)
    # A missing teacher row may hold NaN or junk; zero it so nothing leaks through 0 * NaN.
    teacher = torch.where(mask[:, None], teacher, torch.zeros_like(teacher))
    return teacher, mask


def combine_hard_soft(
    hard_terms: torch.Tensor,
    hard_weights: torch.Tensor,
    logits: torch.Tensor,
    batch: dict,
    *,
    alpha: float,
    temperature: float,
    soft_target: str,
) -> torch.Tensor:
    """``sum_i a_i w_i h_i / sum_i w_i + alpha * sum_{teacher} s_i / B`` (module docstring).

    ``hard_terms`` are the weighted per-item hard losses ``w_{y_i} * h_i`` and ``hard_weights``
    the ``w_{y_i}``, so any hard loss (cross-entropy, focal) plugs in unchanged.
    """
    norm = hard_weights.sum().clamp_min(torch.finfo(hard_weights.dtype).tiny)
    if alpha == 0.0:
        return hard_terms.sum() / norm
    teacher, mask = teacher_inputs(batch, logits)
    hard_scale = torch.where(mask, 1.0 - alpha, 1.0).to(hard_terms.dtype)
    soft = soft_loss_terms(logits, teacher, temperature, soft_target)
    soft = torch.where(mask, soft, torch.zeros_like(soft))
    return (hard_scale * hard_terms).sum() / norm + alpha * soft.sum() / logits.shape[0]


class DistillationLoss(nn.Module):
    """``(1 - alpha) * weighted CE + alpha * T^2 * soft divergence`` (module docstring).

    ``forward(logits, batch)`` reads ``label``, ``teacher_logits`` (raw teacher logits, student
    class order) and optionally ``has_teacher``.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        temperature: float = 4.0,
        soft_target: str = "softmax",
        class_weights: torch.Tensor | Sequence[float] | None = None,
    ):
        super().__init__()
        check_distillation_args(alpha, temperature, soft_target)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.soft_target = soft_target
        self.register_buffer("class_weights", as_weight_tensor(class_weights))

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        terms, weights = cross_entropy_terms(logits, batch["label"], self.class_weights)
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
            f"alpha={self.alpha}, temperature={self.temperature}, soft_target='{self.soft_target}'"
        )

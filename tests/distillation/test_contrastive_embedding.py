"""The relational embedding term (distillation.embedding_contrastive_weight): each window's
projection learns which windows of its batch BirdNET hears as alike."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillation.losses.embedding import TeacherTargetsLoss, contrastive_terms


def _teacher(n: int = 8, dim: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_a_student_that_matches_the_teacher_scores_lower_than_one_that_does_not():
    teacher = _teacher()
    matched = contrastive_terms(teacher.clone(), teacher, 0.1).mean()
    shuffled = contrastive_terms(teacher[torch.arange(7, -1, -1)], teacher, 0.1).mean()
    unrelated = contrastive_terms(_teacher(seed=1), teacher, 0.1).mean()
    assert float(matched) < 0.05
    assert float(shuffled) > 1.0 and float(unrelated) > 1.0


def test_windows_the_teacher_hears_alike_share_the_target():
    """Two copies of one teacher window: the target spreads over both, so a student that
    puts window 0 on either copy loses the same."""
    teacher = _teacher()
    teacher[1] = teacher[0]
    student = teacher.clone()
    base = contrastive_terms(student, teacher, 0.1)
    assert float(base[0]) == pytest.approx(math.log(2), abs=0.01)
    swapped = student.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert torch.allclose(contrastive_terms(swapped, teacher, 0.1), base, atol=1e-5)


def test_the_term_alone_moves_the_projection_toward_the_teacher():
    teacher = _teacher(n=16)
    student = torch.nn.Parameter(torch.randn(16, 64, generator=torch.Generator().manual_seed(5)))
    optimizer = torch.optim.Adam([student], lr=0.05)
    before = float(F.cosine_similarity(student.detach(), teacher).mean())
    for _ in range(100):
        optimizer.zero_grad()
        loss = contrastive_terms(student, teacher, 0.1).mean()
        loss.backward()
        optimizer.step()
    after = float(F.cosine_similarity(student.detach(), teacher).mean())
    assert before < 0.2 and after > 0.5
    assert float(contrastive_terms(student.detach(), teacher, 0.1).mean()) < 0.5


def _batch(teacher: torch.Tensor, has: list[bool]) -> dict:
    n = teacher.shape[0]
    return {"label": torch.full((n,), -1), "teacher_embedding": teacher,
            "has_embedding": torch.tensor(has)}


def test_windows_without_a_teacher_embedding_take_no_part():
    teacher = _teacher(n=4)
    loss_fn = TeacherTargetsLoss(None, alpha=0.0, temperature=1.0, embedding_weight=0.0,
                                 contrastive_weight=1.0)
    assert loss_fn.needs_student_embedding
    logits = torch.zeros(4, 3)
    student = _teacher(n=4, seed=2)
    batch = _batch(teacher, [True, True, True, False])
    loss = loss_fn(logits, {**batch, "student_embedding": student})
    moved = student.clone()
    moved[3] = torch.randn(64)
    assert torch.allclose(loss_fn(logits, {**batch, "student_embedding": moved}), loss)
    expected = contrastive_terms(student[:3], teacher[:3], 0.1).mean()
    assert torch.allclose(loss, expected)
    # One window with an embedding has nothing to be compared with.
    lone = _batch(teacher, [True, False, False, False])
    assert float(loss_fn(logits, {**lone, "student_embedding": student})) == 0.0


def test_mixups_two_calls_give_the_mixed_window_both_partners_as_targets():
    """lam * L(batch) + (1 - lam) * L(partner) is the cross-entropy against the mixed target."""
    teacher, student = _teacher(n=6), _teacher(n=6, seed=3)
    order, lam = torch.tensor([2, 0, 1, 5, 3, 4]), 0.7
    loss_fn = TeacherTargetsLoss(None, alpha=0.0, temperature=1.0, contrastive_weight=1.0)
    logits, has = torch.zeros(6, 3), [True] * 6
    main = loss_fn(logits, {**_batch(teacher, has), "student_embedding": student})
    partner = loss_fn(logits, {**_batch(teacher[order], has), "student_embedding": student})
    mixed = lam * main + (1 - lam) * partner
    # The same figure built by hand from the mixed target distribution.
    unit_s, unit_t = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
    log_p = torch.log_softmax(unit_s @ unit_t.T / 0.1, dim=1)
    target_a = torch.softmax(unit_t @ unit_t.T / 0.1, dim=1)
    target_b = torch.softmax(unit_t[order] @ unit_t.T / 0.1, dim=1)
    by_hand = -((lam * target_a + (1 - lam) * target_b) * log_p).sum(1).mean()
    assert torch.allclose(mixed, by_hand, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"contrastive_weight": -1.0},
                                    {"contrastive_weight": 1.0, "contrastive_temperature": 0.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="embedding_contrastive"):
        TeacherTargetsLoss(None, alpha=0.0, temperature=1.0, **kwargs)

"""The BirdNET-logit term of the teacher-targets loss (distillation.birdnet_logit_weight)."""

from __future__ import annotations

import pytest
import torch

from distillation.losses.embedding import TeacherTargetsLoss

N_CLASSES, DIM = 40, 16


def _loss(weight: float = 1.0, standardize: bool = True, **kwargs) -> TeacherTargetsLoss:
    generator = torch.Generator().manual_seed(0)
    layer = (torch.randn(N_CLASSES, DIM, generator=generator),
             torch.randn(N_CLASSES, generator=generator))
    mean = torch.rand(DIM, generator=generator) if standardize else None
    scale = torch.rand(DIM, generator=generator) + 0.5 if standardize else None
    return TeacherTargetsLoss(None, alpha=0.0, temperature=1.0, embedding_weight=0.0,
                              embedding_mean=mean, embedding_scale=scale, logit_weight=weight,
                              output_layer=layer, **kwargs)


def _batch(teacher: torch.Tensor, student: torch.Tensor) -> dict:
    n = len(teacher)
    return {"label": torch.full((n,), -1), "teacher_embedding": teacher,
            "has_embedding": torch.ones(n, dtype=torch.bool), "student_embedding": student}


def test_the_term_is_zero_when_the_projection_is_the_teachers_standardised_embedding():
    loss = _loss()
    teacher = torch.rand(8, DIM) * 3
    exact = loss.embedding_target(teacher)
    value = loss(torch.zeros(8, 3), _batch(teacher, exact))
    assert abs(float(value)) < 1e-5
    assert float(loss(torch.zeros(8, 3), _batch(teacher, exact + 1.0))) > 0.01


def test_descending_the_term_brings_birdnets_class_scores_of_the_projection_to_the_teachers():
    loss = _loss(logit_temperature=2.0)
    teacher = torch.rand(32, DIM) * 3
    student = torch.zeros(32, DIM, requires_grad=True)
    optimizer = torch.optim.Adam([student], lr=0.05)

    def gap() -> float:
        with torch.no_grad():
            ours = torch.nn.functional.linear(loss.raw_embedding(student), loss.output_weight,
                                              loss.output_bias)
            theirs = torch.nn.functional.linear(teacher, loss.output_weight, loss.output_bias)
        return float((ours.argmax(1) != theirs.argmax(1)).float().mean())

    start_gap, first = gap(), None
    for _ in range(300):
        value = loss(torch.zeros(32, 3), _batch(teacher, student))
        first = first if first is not None else value.item()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert float(value) < 0.1 * first
    assert start_gap > 0.5 and gap() < 0.1


def test_items_without_a_teacher_embedding_do_not_count():
    loss = _loss()
    teacher = torch.rand(4, DIM)
    batch = _batch(teacher, loss.embedding_target(teacher))
    batch["student_embedding"] = batch["student_embedding"].clone()
    batch["student_embedding"][2:] += 5.0
    batch["has_embedding"] = torch.tensor([True, True, False, False])
    assert abs(float(loss(torch.zeros(4, 3), batch))) < 1e-5


def test_the_output_layer_stays_out_of_the_state_dict():
    assert not any("output" in key for key in _loss().state_dict())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weight": -1.0}, "birdnet_logit_weight must be >= 0"),
    ({"logit_temperature": 0.0}, "birdnet_logit_temperature must be > 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _loss(**kwargs)


def test_without_birdnets_layer_the_term_cannot_be_switched_on():
    with pytest.raises(ValueError, match="needs BirdNET's output layer"):
        TeacherTargetsLoss(None, alpha=0.0, temperature=1.0, logit_weight=1.0)

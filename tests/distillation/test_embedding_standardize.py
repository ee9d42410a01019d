"""Standardised embedding targets: the constant mean direction no longer scores well."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillation.losses.embedding import TeacherTargetsLoss, embedding_statistics


def test_statistics_are_the_per_dimension_mean_and_sd():
    a = np.array([[1.0, 0.0], [3.0, 0.0]], np.float16)
    b = np.array([[5.0, 0.0]], np.float16)
    mean, scale = embedding_statistics([a, b])
    assert mean.tolist() == pytest.approx([3.0, 0.0])
    assert scale[0].item() == pytest.approx(np.std([1.0, 3.0, 5.0]))
    assert scale[1].item() > 0  # a silent dimension is floored, not divided by zero


def test_a_student_that_outputs_the_mean_direction_learns_nothing_when_standardised():
    rng = np.random.default_rng(0)
    # Non-negative embeddings with a large common part, as BirdNET's ReLU-pooled ones.
    teacher = np.abs(rng.normal(1.0, 0.3, (64, 16))) + rng.normal(0, 0.2, (64, 16)) ** 2
    teacher = torch.tensor(teacher, dtype=torch.float32)
    constant = teacher.mean(dim=0, keepdim=True).expand_as(teacher)
    batch = {"label": torch.full((64,), -1), "teacher_embedding": teacher,
             "has_embedding": torch.ones(64, dtype=torch.bool), "student_embedding": constant}
    logits = torch.zeros(64, 3)
    raw = TeacherTargetsLoss(None, alpha=0.0, temperature=1.0, embedding_weight=1.0)
    mean, scale = embedding_statistics([teacher.numpy()])
    standardised = TeacherTargetsLoss(None, alpha=0.0, temperature=1.0, embedding_weight=1.0,
                                      embedding_mean=mean, embedding_scale=scale)
    assert raw(logits, batch).item() < 0.1  # the raw target rewards a constant output
    batch["student_embedding"] = constant - mean  # its standardised counterpart is ~0
    assert standardised(logits, batch).item() > 0.9
    batch["student_embedding"] = (teacher - mean) / scale  # the real target scores 0
    assert standardised(logits, batch).item() == pytest.approx(0.0, abs=1e-5)


def test_unlabelled_files_of_the_species_folders_use_their_labelled_records(tmp_path):
    """A few-shot fold leaves most recordings unused; listed again as unlabelled audio, they
    are found under the key extraction gave them (their path in the species folders)."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from datasets.unlabelled import PreparedUnlabelled
    from distillation.training_setup import labelled_record_keys

    birds = tmp_path / "birds"
    (birds / "Bubo_bubo").mkdir(parents=True)
    inside = birds / "Bubo_bubo" / "XC1.wav"
    inside.write_bytes(b"x")
    outside = tmp_path / "field" / "a.wav"
    outside.parent.mkdir()
    outside.write_bytes(b"y")
    store = SimpleNamespace(has=lambda key: key in {"Bubo_bubo/XC1.wav", "unlabelled/field/a.wav"})
    data = SimpleNamespace(unlabelled=[
        PreparedUnlabelled("unlabelled/birds/Bubo_bubo/XC1.wav", str(inside), "k1", 3.0),
        PreparedUnlabelled("unlabelled/field/a.wav", str(outside), "k2", 3.0),
    ])
    cfg = OmegaConf.create({"dataset": {"bird_data_dir": str(birds)}})
    labelled_record_keys(cfg, data, store)
    assert [item.key for item in data.unlabelled] == ["Bubo_bubo/XC1.wav",
                                                      "unlabelled/field/a.wav"]

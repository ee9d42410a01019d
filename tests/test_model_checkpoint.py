"""The typed checkpoint: files written before it (plain dicts) load into it unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_checkpoint import (
    AudioSettings,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from models import build_model

CLASSES = ["A_a", "B_b", "no_birds"]


def _old_style_payload(model: torch.nn.Module) -> dict:
    """A checkpoint as the code before the typed form wrote it (format version 1)."""
    return {
        "format_version": 1,
        "model_name": "dscnn_gru",
        "model_kwargs": {"n_classes": 3, "channels": 24, "sample_rate": 32000,
                         "clip_duration": 3.0},
        "state_dict": model.state_dict(),
        "class_names": CLASSES,
        "audio": {"sample_rate": 32000, "clip_duration": 3.0},
        "metrics": {"val": {"macro_f1": 0.5}},
        "config": {"dataset": {"bird_data_dir": "birds"}},
        "epoch": 4,
        "split_manifest": [{"path": "A_a/x.wav", "label": "A_a", "group": "x", "split": "test",
                            "source": "bird"}],
        "output_activation": "softmax",
    }


def test_a_checkpoint_written_before_the_typed_form_loads(tmp_path: Path) -> None:
    model = build_model("dscnn_gru", n_classes=3, channels=24).eval()
    path = tmp_path / "old.pt"
    torch.save(_old_style_payload(model), path)
    loaded, checkpoint = load_checkpoint(path)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.class_names == CLASSES and checkpoint.epoch == 4
    assert checkpoint.audio == AudioSettings(32000, 3.0) and checkpoint.audio.clip_samples == 96000
    assert checkpoint.dataset_config == {"bird_data_dir": "birds"}
    assert checkpoint.split_manifest[0]["split"] == "test"
    assert checkpoint.extra == {"output_activation": "softmax"}
    audio = 0.1 * torch.randn(2, 96000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(audio), model(audio))


def test_typed_checkpoint_round_trips_to_the_same_file_content(tmp_path: Path) -> None:
    model = build_model("dscnn_gru", n_classes=3, channels=24)
    first = tmp_path / "first.pt"
    torch.save(_old_style_payload(model), first)
    again = tmp_path / "again.pt"
    write_checkpoint(again, read_checkpoint(first))
    a, b = (torch.load(p, weights_only=True) for p in (first, again))
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k != "state_dict"} == {
        k: v for k, v in b.items() if k != "state_dict"}
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_minimal_checkpoint_gets_empty_optional_fields(tmp_path: Path) -> None:
    payload = _old_style_payload(build_model("dscnn_gru", n_classes=3, channels=24))
    for key in ("metrics", "config", "epoch", "split_manifest", "output_activation"):
        del payload[key]
    path = tmp_path / "minimal.pt"
    torch.save(payload, path)
    checkpoint = read_checkpoint(path)
    assert (checkpoint.metrics, checkpoint.config, checkpoint.split_manifest) == ({}, {}, [])
    assert checkpoint.epoch is None and checkpoint.extra == {}


def test_bad_audio_settings_are_a_checkpoint_error(tmp_path: Path) -> None:
    payload = _old_style_payload(build_model("dscnn_gru", n_classes=3, channels=24))
    payload["audio"] = {"sample_rate": "fast"}
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="audio settings"):
        read_checkpoint(path)


def test_a_field_of_the_wrong_type_is_a_checkpoint_error(tmp_path: Path) -> None:
    payload = _old_style_payload(build_model("dscnn_gru", n_classes=3, channels=24))
    payload["model_kwargs"] = 7
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="wrong type"):
        read_checkpoint(path)

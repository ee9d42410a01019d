"""Complete models, registry, checkpoints, cost summary and ONNX export of the default model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from model_checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    check_class_names,
    load_checkpoint,
    save_checkpoint,
)
from models import MODEL_REGISTRY, build_model, count_parameters, list_models, model_summary
from modules import SpecAugment

SR = 32000
CLIP_S = 3.0
N_SAMPLES = int(SR * CLIP_S)
CLASSES = [f"bird_{i}" for i in range(10)]
AUDIO = {"sample_rate": SR, "clip_duration": CLIP_S}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _audio(batch: int = 2) -> torch.Tensor:
    return 0.1 * torch.randn(batch, N_SAMPLES)


def _forward_backward(model: torch.nn.Module, n_classes: int) -> None:
    model.train()
    logits = model(_audio())
    assert logits.shape == (2, n_classes)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ----------------------------------------------------------------------------- models


def test_registry_lists_the_models() -> None:
    assert {"dscnn_gru", "cnn2d", "crnn"} <= set(list_models())
    assert list_models() == sorted(MODEL_REGISTRY)


def test_build_model_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="cnn2d.*crnn.*dscnn_gru"):
        build_model("resnet50", n_classes=3)


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_model_forward_backward(name: str) -> None:
    model = build_model(name, n_classes=10, sample_rate=SR, clip_duration=CLIP_S)
    assert isinstance(model.feature_augment, torch.nn.Identity)
    _forward_backward(model, 10)


@pytest.mark.parametrize("frontend", ["logmel", "loglinear", "pcen"])
def test_default_model_with_each_frontend(frontend: str) -> None:
    model = build_model("dscnn_gru", n_classes=5, frontend=frontend)
    _forward_backward(model, 5)
    assert model.frontend.n_bins == 64


def test_loglinear_frontend_parameters_are_separable() -> None:
    model = build_model("dscnn_gru", n_classes=5, frontend="loglinear")
    frontend_ids = {id(p) for p in model.frontend.parameters()}
    assert len(frontend_ids) == 1
    rest = [p for p in model.parameters() if id(p) not in frontend_ids]
    assert len(rest) == len(list(model.parameters())) - 1


@pytest.mark.parametrize("pooling", ["attention", "linear_softmax", "max"])
def test_crnn_every_pooling(pooling: str) -> None:
    _forward_backward(build_model("crnn", n_classes=10, pooling=pooling), 10)


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("dscnn_gru", 30_000, 70_000), ("cnn2d", 1, 150_000), ("crnn", 1, 200_000)],
)
def test_parameter_budget(name: str, low: int, high: int) -> None:
    assert low <= count_parameters(build_model(name, n_classes=10)) <= high


def test_dscnn_gru_widths_are_configurable() -> None:
    small = build_model(
        "dscnn_gru", n_classes=10, channels=32, gru_hidden=32, n_blocks=3, kernel_size=5
    )
    assert count_parameters(small) < count_parameters(build_model("dscnn_gru", n_classes=10))
    assert small(_audio()).shape == (2, 10)


def test_model_is_blind_to_recording_level() -> None:
    model = build_model("dscnn_gru", n_classes=5).eval()
    audio = _audio()
    with torch.no_grad():
        torch.testing.assert_close(model(0.1 * audio), model(audio), atol=1e-3, rtol=0)


def test_specaugment_swap_keeps_state_dict_compatible() -> None:
    fresh = build_model("dscnn_gru", n_classes=5)
    augmented = build_model("dscnn_gru", n_classes=5)
    augmented.feature_augment = SpecAugment(time_mask_param=20, freq_mask_param=8)
    assert fresh.state_dict().keys() == augmented.state_dict().keys()
    augmented.load_state_dict(fresh.state_dict())
    fresh.load_state_dict(augmented.state_dict())
    _forward_backward(augmented, 5)


def test_model_summary() -> None:
    model = build_model("dscnn_gru", n_classes=10)
    model.train()
    summary = model_summary(model, SR, CLIP_S)
    assert summary["parameters"] == count_parameters(model)
    assert summary["macs"] > 1_000_000
    assert summary["size_bytes_fp32"] >= 4 * summary["parameters"]
    assert model.training  # restored


# ----------------------------------------------------------------------------- checkpoints


def _save(path: Path, model: torch.nn.Module, name: str = "dscnn_gru", **kwargs) -> None:
    save_checkpoint(
        path,
        model,
        model_name=name,
        model_kwargs=kwargs.pop("model_kwargs", {"n_classes": 10, "channels": 48}),
        class_names=CLASSES,
        audio=AUDIO,
        metrics={
            "val_f1": np.float32(0.75),
            "per_class": {"bird_0": np.float64(0.5)},
            "confusion": np.eye(2, dtype=np.int64),
        },
        config={"dataset": {"allowed_bird_classes": CLASSES}, "seed": np.int64(3)},
        epoch=7,
        split_manifest=[{"path": "a.wav", "label": "bird_0", "split": "train"}],
        **kwargs,
    )


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_model("dscnn_gru", n_classes=10, channels=48)
    _forward_backward(model, 10)  # move BN statistics away from their defaults
    model.eval()
    path = tmp_path / "run" / "best.pt"
    _save(path, model)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp file left over

    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert raw["model_kwargs"]["n_classes"] == 10
    assert raw["model_kwargs"]["sample_rate"] == SR
    assert raw["metrics"]["val_f1"] == pytest.approx(0.75)
    assert raw["epoch"] == 7 and raw["split_manifest"][0]["label"] == "bird_0"

    loaded, checkpoint = load_checkpoint(path)
    assert not loaded.training
    assert checkpoint.class_names == CLASSES
    assert checkpoint.audio.as_dict() == AUDIO
    audio = _audio()
    with torch.no_grad():
        assert torch.equal(loaded(audio), model(audio))


def test_checkpoint_round_trip_keeps_sequence_kwargs(tmp_path: Path) -> None:
    kwargs = {"n_classes": 10, "channels": (8, 16, 32), "pooling": "linear_softmax"}
    model = build_model("crnn", **kwargs).eval()
    _save(tmp_path / "crnn.pt", model, name="crnn", model_kwargs=kwargs)
    loaded, checkpoint = load_checkpoint(tmp_path / "crnn.pt")
    assert checkpoint.model_kwargs["channels"] == [8, 16, 32]
    audio = _audio()
    with torch.no_grad():
        assert torch.equal(loaded(audio), model(audio))


def test_checkpoint_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint\x00\x01")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(path)


def test_checkpoint_bare_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model("cnn2d", n_classes=3).state_dict(), path)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_checkpoint_unknown_model_name(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    _save(path, build_model("dscnn_gru", n_classes=10, channels=48))
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model_name"] = "transformer_xl"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="transformer_xl"):
        load_checkpoint(path)


def test_checkpoint_state_dict_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    # Stored kwargs say 64 channels, the weights are from a 48-channel model.
    _save(
        path,
        build_model("dscnn_gru", n_classes=10, channels=48),
        model_kwargs={"n_classes": 10, "channels": 64},
    )
    with pytest.raises(CheckpointError, match="retrain"):
        load_checkpoint(path)


def test_save_rejects_class_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_classes"):
        _save(
            tmp_path / "x.pt",
            build_model("cnn2d", n_classes=3),
            name="cnn2d",
            model_kwargs={"n_classes": 3},
        )


def test_check_class_names() -> None:
    check_class_names(["a", "b"], ["a", "b"])
    with pytest.raises(CheckpointError) as info:
        check_class_names(["blackbird", "robin", "wren"], ["blackbird", "robin", "owl"])
    message = str(info.value)
    assert "owl" in message and "wren" in message
    assert "allowed_bird_classes" in message
    with pytest.raises(CheckpointError, match="order"):
        check_class_names(["robin", "blackbird"], ["blackbird", "robin"])


# ----------------------------------------------------------------------------- ONNX


def _export_and_compare(model: torch.nn.Module, path: Path, **export_kwargs) -> None:
    import onnx
    import onnxruntime as ort

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, GRU flat weights)
        torch.onnx.export(
            model,
            (_audio(2),),
            str(path),
            input_names=["audio"],
            output_names=["logits"],
            **export_kwargs,
        )
    onnx_model = onnx.load(str(path))
    assert max(op.version for op in onnx_model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    batch_dim = onnx_model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # symbolic, i.e. dynamic
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        audio = _audio(batch)
        (onnx_logits,) = session.run(None, {"audio": audio.numpy()})
        with torch.no_grad():
            torch_logits = model(audio).numpy()
        np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=0)


def test_default_model_exports_to_onnx(tmp_path: Path) -> None:
    """The path edge export uses: dynamo exporter, torch.stft exported as the ONNX STFT op."""
    model = build_model("dscnn_gru", n_classes=10)
    _forward_backward(model, 10)  # non-trivial BN statistics
    _export_and_compare(
        model,
        tmp_path / "student.onnx",
        dynamo=True,
        opset_version=18,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},),
    )


def test_conv_stft_variant_exports_with_legacy_exporter(tmp_path: Path) -> None:
    """Fallback for runtimes without an STFT op: DFT as a conv, plain TorchScript exporter."""
    model = build_model("dscnn_gru", n_classes=10, frontend_kwargs={"stft_method": "conv"})
    _export_and_compare(
        model,
        tmp_path / "student_conv.onnx",
        dynamo=False,
        opset_version=17,
        dynamic_axes={"audio": {0: "batch"}, "logits": {0: "batch"}},
    )

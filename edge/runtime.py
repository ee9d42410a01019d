"""One classifier interface over exported ONNX models and PyTorch checkpoints.

``predict_windows(windows (n, samples)) -> probabilities (n, classes)`` is all the
prediction code uses. ONNX needs only numpy and onnxruntime (what a device installs); torch
is imported only when a ``.pt`` checkpoint is given.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from common.activations import sigmoid, softmax
from edge.errors import EdgeError
from edge.sidecar import (
    FP32_FILENAME,
    INT8_FILENAME,
    ModelInfo,
    info_from_onnx_metadata,
    model_file,
    read_sidecar,
)

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp32")


def to_probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    probs = softmax(logits) if activation == "softmax" else sigmoid(logits)
    return probs.astype(np.float32)


class Classifier(Protocol):
    info: ModelInfo
    description: str

    def predict_logits(self, windows: np.ndarray) -> np.ndarray: ...

    def predict_windows(self, windows: np.ndarray) -> np.ndarray: ...


class WindowClassifier:
    info: ModelInfo

    def _check(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.info.clip_samples:
            raise ValueError(
                f"windows must have shape (n, {self.info.clip_samples}) ("
                f"{self.info.clip_duration} s at {self.info.sample_rate} Hz), got {windows.shape}"
            )
        return windows

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """Confidences (n, classes) in [0, 1], ``no_birds`` last."""
        return to_probabilities(self.predict_logits(windows), self.info.output_activation)


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads spin-wait by default; on a 1-4 core device that steals cycles from
    # the audio decoding running next to the model.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxClassifier(WindowClassifier):
    def __init__(self, path: str | Path, info: ModelInfo | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(path)
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own generic types
            raise EdgeError(f"cannot load ONNX model {path}: {error}") from error
        if info is None:
            metadata = self.session.get_modelmeta().custom_metadata_map
            info = info_from_onnx_metadata(metadata, str(path))
            if info is None:
                info = read_sidecar(path.parent)
        self.info = info
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        self.description = f"ONNX {path.name} ({threads} thread{'s' * (threads > 1)})"

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: self._check(windows)})[0]


def load_classifier(path: str | Path, threads: int = 1, precision: str = "int8") -> Classifier:
    """A classifier from an export folder (``precision`` picks the file, INT8 by default and
    FP32 when INT8 was not exported), a single ``.onnx`` file or a ``.pt`` checkpoint."""
    path = Path(path)
    if threads < 1:
        raise EdgeError(f"threads must be at least 1, got {threads}")
    if precision not in PRECISIONS:
        raise EdgeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not path.exists():
        raise EdgeError(
            f"model not found: {path}. Give an export folder (export_model.py --out), an "
            ".onnx file or a .pt checkpoint"
        )
    if path.is_dir():
        info = read_sidecar(path)
        kind = precision
        if kind not in info.files:
            kind = "fp32" if precision == "int8" else "int8"
            info.files.setdefault(kind, INT8_FILENAME if kind == "int8" else FP32_FILENAME)
            log.warning("%s has no %s model; using %s", path, precision, info.files[kind])
        onnx_path = model_file(path, info, kind)
        if not onnx_path.is_file():
            raise EdgeError(f"{onnx_path} is listed in {path}/model.json but missing; re-export")
        return OnnxClassifier(onnx_path, info, threads)
    if path.suffix == ".onnx":
        return OnnxClassifier(path, None, threads)
    if path.suffix == ".pt":
        # A checkpoint needs torch: only on the training machine (the export tools).
        from export.torch_classifier import TorchClassifier

        return TorchClassifier(path, threads)
    raise EdgeError(f"{path}: expected an export folder, a .onnx file or a .pt checkpoint")

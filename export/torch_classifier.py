"""A ``.pt`` checkpoint behind the edge runtime's Classifier interface: the PyTorch reference
the exported ONNX files are compared with (parity, latency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.runtime import WindowClassifier


class TorchClassifier(WindowClassifier):
    """A checkpoint run in PyTorch: the reference the ONNX files are compared with."""

    def __init__(self, path: str | Path, threads: int = 1, hop_s: float = 1.0,
                 threshold: float = 0.5) -> None:
        import torch

        from export.onnx_export import load_student, model_info

        torch.set_num_threads(threads)
        self.model, checkpoint = load_student(path)
        self.info = model_info(Path(path), checkpoint, self.model, hop_s, threshold)
        self.path = Path(path)
        self.description = f"PyTorch {self.path.name} ({threads} thread{'s' * (threads > 1)})"

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(self._check(windows))).numpy()

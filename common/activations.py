"""Sigmoid and softmax on numpy arrays, written once for the teacher, the datasets and the
device runtime (torch code uses torch's own)."""

from __future__ import annotations

import numpy as np

# exp(30) is far from float64 overflow and 1 / (1 + exp(-30)) is already 1 - 1e-13.
DEFAULT_LOGIT_CLIP = 30.0


def sigmoid(logits: np.ndarray | float, sensitivity: float = 1.0,
            clip: float = DEFAULT_LOGIT_CLIP) -> np.ndarray:
    """``1 / (1 + exp(-sensitivity * clip(logits, -clip, clip)))`` in float64."""
    clipped = np.clip(np.asarray(logits, dtype=np.float64), -clip, clip)
    return 1.0 / (1.0 + np.exp(-sensitivity * clipped))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a (n, classes) array, shifted by the row maximum for stability."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)

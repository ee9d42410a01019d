"""Device and seed resolution, the same for training, evaluation and the benchmark.

torch is imported inside the functions: this package is also imported on devices without it.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """One seed for Python, numpy and torch (every random choice of a run follows it)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str, setting: str = "training.device") -> torch.device:
    """auto -> CUDA when present; a CUDA request without CUDA falls back to CPU with a warning
    naming the config ``setting``."""
    import torch

    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("%s=%s requested but CUDA is not available; using CPU", setting, name)
        return torch.device("cpu")
    return torch.device(name)

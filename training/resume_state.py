"""What an exact resume needs beyond weights: every random stream, and the run's own log.

The shuffle order of an epoch comes from the train loader's generator and the augmentation
from torch's global generator (numpy and ``random`` are saved too, for any code that uses
them). Saved after each epoch and restored on resume, they make epoch k of a resumed run
draw exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

_resume_handler: logging.Handler | None = None


def capture_rng_state(generator: torch.Generator | None) -> dict:
    """Plain tensors and lists only, so the state loads with ``weights_only=True``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                      "position": int(position), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
        "python_rng": [int(version), list(internal), gauss_next],
        "loader_generator": generator.get_state() if generator is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(saved: dict, generator: torch.Generator | None) -> None:
    """Put back what :func:`capture_rng_state` saved (older states hold torch's RNG only)."""
    torch.set_rng_state(saved["torch_rng"])
    numpy_state = saved.get("numpy_rng")
    if numpy_state:
        np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                             numpy_state["position"], numpy_state["has_gauss"],
                             numpy_state["cached_gaussian"]))
    python_state = saved.get("python_rng")
    if python_state:
        version, internal, gauss_next = python_state
        random.setstate((version, tuple(internal), gauss_next))
    if generator is not None and saved.get("loader_generator") is not None:
        generator.set_state(saved["loader_generator"])
    elif generator is not None:
        log.warning("This run was saved by an older version without its shuffle state; the "
                    "resumed epochs are shuffled differently from an uninterrupted run")
    if saved.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])


def continue_log_in(run_dir: Path, started_in: Path) -> None:
    """Append this process's log to the resumed run's own ``train.log``."""
    global _resume_handler
    root = logging.getLogger()
    if _resume_handler is not None:
        root.removeHandler(_resume_handler)
        _resume_handler.close()
        _resume_handler = None
    if Path(run_dir).resolve() == Path(started_in).resolve():
        return
    handler = logging.FileHandler(Path(run_dir) / "train.log", mode="a", encoding="utf-8",
                                  errors="backslashreplace")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    _resume_handler = handler
    log.info("Resumed by a process started in %s; the run continues in %s", started_in, run_dir)

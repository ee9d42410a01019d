"""Atomic writes: a file is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import soundfile as sf


def write_atomic(path: str | Path, writer: Callable[[IO[bytes]], object]) -> Path:
    """Run ``writer`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; a new file follows the umask.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        with open(tmp, "xb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_wav_atomic(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    return write_atomic(
        path, lambda handle: sf.write(handle, audio, sample_rate, format="WAV", subtype="PCM_16")
    )


def write_json_atomic(value: object, path: str | Path) -> Path:
    return write_atomic(path, lambda handle: handle.write(json.dumps(value, indent=2).encode()))


def save_table_atomic(table: pd.DataFrame, path: str | Path) -> Path:
    return write_atomic(path, lambda handle: table.to_csv(handle, index=False))

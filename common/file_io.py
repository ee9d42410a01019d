"""Atomic writes: a file is either complete or absent, never half-written."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import soundfile as sf

from common.safe_paths import StorageError, storage_error

if TYPE_CHECKING:  # pandas is imported where a table is read or written: devices lack it
    import pandas as pd


def write_atomic(path: str | Path, writer: Callable[[IO[bytes]], object]) -> Path:
    """Run ``writer`` on a temporary file next to ``path``, then rename it into place.

    Any OS error while writing (a full disk, a read-only folder, numpy's "n requested and m
    written" short write) is a StorageError naming the file: it is never about the input.
    """
    path = Path(path)
    # Not mkstemp: its 0600 mode would survive the rename; a new file follows the umask.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except StorageError:
        Path(tmp).unlink(missing_ok=True)
        raise
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise storage_error(path, error) from error
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
    # File names that are not valid UTF-8 are written as their original bytes, and read back
    # identically by read_table (surrogateescape on both sides).
    return write_atomic(
        path, lambda handle: table.to_csv(handle, index=False, errors="surrogateescape")
    )


def read_table(path: str | Path, **kwargs) -> pd.DataFrame:
    """A CSV this project wrote (all columns as strings unless ``dtype`` says otherwise)."""
    kwargs.setdefault("dtype", str)
    kwargs.setdefault("keep_default_na", False)
    import pandas as pd

    return pd.read_csv(path, encoding_errors="surrogateescape", **kwargs)


def write_csv_atomic(path: str | Path, columns: Sequence[str],
                     rows: Iterable[Mapping[str, object]]) -> Path:
    """A CSV of ``rows`` (dicts keyed by ``columns``) without pandas, for the device side;
    names that are not valid UTF-8 keep their bytes, as with :func:`save_table_atomic`."""
    def write(handle: IO[bytes]) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
        writer = csv.DictWriter(text, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
        text.flush()
        text.detach()

    return write_atomic(path, write)

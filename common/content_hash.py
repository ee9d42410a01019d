"""Whether a file is still the one a cached result was computed from.

Caches of expensive results (BirdNET's outputs: ~35 ms a window) are stamped with the
source file's size and modification time, which is cheap to check. Copying a dataset to
another disk, ``rsync`` without ``-t``, a cloud sync or a fresh checkout gives every file a
new mtime with the same bytes; recomputing hours of BirdNET then would be a loss. So the stamp
also holds the file's SHA-256, checked only when the size matches and the mtime does not:
reading a file to hash it costs milliseconds, BirdNET on it costs seconds.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from pathlib import Path

import numpy as np

from common.file_io import write_atomic

CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Match(Enum):
    SAME = "same"  # size and mtime as stamped
    SAME_CONTENT = "same content"  # new mtime, same bytes: reuse, and restamp the cache
    CHANGED = "changed"


def compare_stamp(path: str | Path, size: int, mtime_ns: int, sha256: str | None) -> Match:
    """How the file at ``path`` relates to a stamp (``sha256`` None: an older stamp)."""
    stat = Path(path).stat()
    if stat.st_size != size:
        return Match.CHANGED
    if stat.st_mtime_ns == mtime_ns:
        return Match.SAME
    if sha256 and file_sha256(path) == sha256:
        return Match.SAME_CONTENT
    return Match.CHANGED


def restamp_npz(path: str | Path, mtime_ns: int) -> None:
    """Rewrite a cached ``.npz`` whose source has the same bytes under a new mtime, with that
    mtime in its ``source_mtime_ns``, so that the next check is the cheap one again."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["source_mtime_ns"] = np.int64(mtime_ns)
    write_atomic(Path(path), lambda handle: np.savez(handle, **arrays))

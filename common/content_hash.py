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
from collections.abc import Mapping
from dataclasses import dataclass
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


STAMP_FIELDS = ("source_size", "source_mtime_ns", "source_sha256")


@dataclass(frozen=True)
class SourceStamp:
    """Cheap identity of a source file: its size and modification time, and where it is, to
    hash its content when only the mtime disagrees."""

    size: int
    mtime_ns: int
    path: str | None = None

    @classmethod
    def of(cls, path: str | Path) -> SourceStamp:
        stat = Path(path).stat()
        return cls(int(stat.st_size), int(stat.st_mtime_ns), str(path))

    def arrays(self) -> dict[str, np.ndarray]:
        """The stamp as stored in a cached ``.npz`` (the content hash is computed here, once).
        A file that cannot be read any more gets the mtime stamp alone, as before hashes."""
        arrays = {"source_size": np.int64(self.size), "source_mtime_ns": np.int64(self.mtime_ns)}
        if self.path is not None:
            try:
                arrays["source_sha256"] = np.str_(file_sha256(self.path))
            except OSError:
                pass
        return arrays

    def compare(self, data: Mapping[str, np.ndarray]) -> Match:
        """How the stamp stored in ``data`` (an opened ``.npz``) relates to this file; a stamp
        without ``source_sha256`` (older caches) matches on size and mtime only."""
        if int(data["source_size"]) != self.size:
            return Match.CHANGED
        if int(data["source_mtime_ns"]) == self.mtime_ns:
            return Match.SAME
        stored = str(data["source_sha256"]) if "source_sha256" in data else ""
        if self.path is None or not stored:
            return Match.CHANGED
        try:
            same = file_sha256(self.path) == stored
        except OSError:
            return Match.CHANGED
        return Match.SAME_CONTENT if same else Match.CHANGED


def restamp_npz(path: str | Path, mtime_ns: int) -> None:
    """Rewrite a cached ``.npz`` whose source has the same bytes under a new mtime, with that
    mtime in its ``source_mtime_ns``, so that the next check is the cheap one again."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["source_mtime_ns"] = np.int64(mtime_ns)
    write_atomic(Path(path), lambda handle: np.savez(handle, **arrays))

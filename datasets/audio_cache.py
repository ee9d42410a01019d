"""Decode-once cache of resampled mono audio.

Decoding MP3 and resampling cost far more than a training step of a 50k-parameter model, so
each file is decoded once per sample rate and stored as a ``.npy`` file that epochs (and
later runs) read back through a memory map.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from common.file_io import write_atomic
from datasets.audio_utils import load_audio

log = logging.getLogger(__name__)


def file_fingerprint(path: str | Path) -> str:
    """Identity of a file's current content as cheaply as possible: path, size, mtime."""
    path = Path(path).resolve()
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


class DecodedAudioCache:
    """Mono float32 audio at one sample rate, on disk (``cache_dir``) or in memory (None)."""

    def __init__(self, cache_dir: str | Path | None, sample_rate: int, max_open: int = 256):
        self.cache_dir = Path(cache_dir) / f"sr{sample_rate}" if cache_dir else None
        self.sample_rate = sample_rate
        self._memory: dict[str, np.ndarray] = {}
        # Open memory maps, bounded so that huge datasets don't exhaust file handles.
        self._open: OrderedDict[str, np.ndarray] = OrderedDict()
        self._max_open = max_open

    def _key(self, path: str | Path) -> str:
        digest = hashlib.sha1(  # a name need not be valid UTF-8
            f"{file_fingerprint(path)}|{self.sample_rate}".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def _npy_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.npy"

    def ensure(self, path: str | Path) -> str:
        """Decode ``path`` if it is not cached yet; return its cache key.

        Raises AudioLoadError for unusable files (nothing is cached for them).
        """
        key = self._key(path)
        if self.cache_dir is None:
            if key not in self._memory:
                self._memory[key] = load_audio(path, self.sample_rate)[0]
            return key
        target = self._npy_path(key)
        if not target.exists():
            audio = load_audio(path, self.sample_rate)[0]
            write_atomic(target, lambda handle: np.save(handle, audio))
        return key

    def get(self, key: str) -> np.ndarray:
        """The cached audio for a key returned by :meth:`ensure` (read-only memory map)."""
        if self.cache_dir is None:
            return self._memory[key]
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        audio = np.load(self._npy_path(key), mmap_mode="r")
        self._open[key] = audio
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return audio

    def load(self, path: str | Path) -> np.ndarray:
        return self.get(self.ensure(path))

    # Small JSON results derived from a file (call windows, quiet segments) live next to the
    # audio so that a second run skips detection too.
    def read_json(self, key: str, name: str) -> dict | None:
        if self.cache_dir is None:
            return None
        path = self._npy_path(key).with_suffix(f".{name}.json")
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_json(self, key: str, name: str, value: dict) -> None:
        if self.cache_dir is None:
            return
        path = self._npy_path(key).with_suffix(f".{name}.json")
        write_atomic(path, lambda handle: handle.write(json.dumps(value).encode()))

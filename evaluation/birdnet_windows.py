"""BirdNET's outputs for every window of every file, computed once for all folds.

The benchmark's windows (3 s at 48 kHz on a fixed hop, the last aligned to the end) are run
through BirdNET once per file; the raw logits of all 6,522 classes and the 1024-d embedding
are kept as float16 in one ``.npz`` per file, named by the file's path and the hop and
stamped with its size, mtime and SHA-256 (a copied dataset with new mtimes is not recomputed;
see common/content_hash.py). Every fold then scores its test files (BirdNET restricted to
the species) and fits the linear head on its training files' embeddings without running
BirdNET again, and a later evaluation of other species or recipes on the same audio reuses
the cache.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.content_hash import STAMP_FIELDS, Match, SourceStamp, restamp_npz
from common.file_io import write_atomic
from common.skipped_files import SkippedFile
from datasets.audio_utils import AudioLoadError, load_audio
from datasets.windows import sliding_windows

log = logging.getLogger(__name__)

# Bump when what is stored changes (2: named by path, stamped with size, mtime, SHA-256).
CACHE_VERSION = 2
MAX_FILES_IN_MEMORY = 512


@dataclass(frozen=True)
class FileWindows:
    """BirdNET on one file: window starts (s), raw logits (n, 6522), embeddings (n, 1024)."""

    starts: np.ndarray
    logits: np.ndarray
    embeddings: np.ndarray

    def nearest(self, start_s: float, clip_s: float, window_s: float = 3.0) -> int:
        """The window whose centre is closest to the centre of [start_s, start_s + clip_s]."""
        centre = start_s + clip_s / 2
        return int(np.argmin(np.abs(self.starts + window_s / 2 - centre)))


class BirdNetWindowCache:
    """Per-file BirdNET window outputs on disk under ``root``, filled by :meth:`ensure`."""

    def __init__(self, root: str | Path, hop_s: float = 1.0, batch_size: int = 16):
        self.root = Path(root)
        self.hop_s = float(hop_s)
        self.batch_size = batch_size
        self._teacher = None
        # Recently read files (a fold reads each training file once per labelled window):
        # bounded, so a large dataset does not hold every file's logits in memory.
        self._loaded: OrderedDict[str, FileWindows] = OrderedDict()

    def _path(self, audio_path: str | Path) -> Path:
        identity = f"v{CACHE_VERSION}|{Path(audio_path).resolve()}|hop={self.hop_s}"
        digest = hashlib.sha1(identity.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npz"

    def _is_current(self, audio_path: str) -> bool:
        """Whether the stored outputs were computed from this file's current content."""
        target = self._path(audio_path)
        try:
            stamp = SourceStamp.of(audio_path)
            with np.load(target, allow_pickle=False) as data:
                match = stamp.compare({name: data[name] for name in STAMP_FIELDS})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            return False
        if match is Match.SAME_CONTENT:  # copied or synced: same bytes, new mtime
            restamp_npz(target, stamp.mtime_ns)
        return match is not Match.CHANGED

    def _compute(self, audio_path: str) -> FileWindows:
        if self._teacher is None:
            from birdnet.teacher import BirdNetTeacher

            self._teacher = BirdNetTeacher(num_threads=1, batch_size=self.batch_size)
        teacher = self._teacher
        audio, _ = load_audio(audio_path, teacher.sample_rate)
        # The benchmark's own windows, so BirdNET's scores here equal run_benchmark.py's.
        starts, windows = sliding_windows(audio, teacher.sample_rate, teacher.window_s,
                                          self.hop_s)
        logits, embeddings = teacher.logits_and_embeddings(windows)
        return FileWindows(np.asarray(starts, np.float32), logits.astype(np.float16),
                           embeddings.astype(np.float16))

    def ensure(self, audio_paths: Iterable[str], skipped: list[SkippedFile]) -> set[str]:
        """Compute what is missing; return the paths that have outputs (bad files skipped)."""
        audio_paths = sorted(set(audio_paths))
        missing = [p for p in audio_paths if not self._is_current(p)]
        if missing:
            log.info("BirdNET on %d of %d files (the rest is cached in %s)", len(missing),
                     len(audio_paths), self.root)
        bad: set[str] = set()
        for path in tqdm(missing, desc="BirdNET windows", unit="file", disable=not missing):
            try:
                result = self._compute(path)
            except AudioLoadError as error:
                skipped.append(SkippedFile(path, str(error), "birdnet"))
                bad.add(path)
                continue
            target = self._path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            stamp = SourceStamp.of(path).arrays()
            write_atomic(target, lambda handle, r=result, st=stamp: np.savez(
                handle, starts=r.starts, logits=r.logits, embeddings=r.embeddings, **st))
        return {p for p in audio_paths if p not in bad}

    def get(self, audio_path: str) -> FileWindows:
        if audio_path in self._loaded:
            self._loaded.move_to_end(audio_path)
            return self._loaded[audio_path]
        with np.load(self._path(audio_path)) as data:
            outputs = FileWindows(data["starts"], data["logits"], data["embeddings"])
        self._loaded[audio_path] = outputs
        if len(self._loaded) > MAX_FILES_IN_MEMORY:
            self._loaded.popitem(last=False)
        return outputs

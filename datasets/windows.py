"""Windows of a recording: where they start, and the audio cut at those starts.

Written once for every stage: training picks windows with :func:`training_window_starts`
(the INT8 calibration, parity and threshold windows reuse it, so they are chosen exactly as
training chose them); the benchmark, the scoreboard, the teacher and the soundscape scoring
slide windows over whole files with :func:`sliding_windows`; everything cuts with
:func:`cut_windows`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from datasets.audio_utils import (
    DEFAULT_CALL_BAND_HZ,
    detect_call_windows,
    loudest_window_start,
    pad_or_crop,
    sliding_window_starts,
)
from datasets.empty_segment_dataset import find_quiet_segments


def cut_windows(audio: np.ndarray, sample_rate: int, starts: Sequence[float],
                window_samples: int) -> np.ndarray:
    """(len(starts), window_samples) float32; windows past the end are zero-padded."""
    out = np.empty((len(starts), window_samples), dtype=np.float32)
    for row, start in enumerate(starts):
        out[row] = pad_or_crop(audio, window_samples, int(round(start * sample_rate)))
    return out


def sliding_windows(audio: np.ndarray, sample_rate: int, clip_s: float,
                    hop_s: float) -> tuple[list[float], np.ndarray]:
    """(starts, windows): a window every ``hop_s`` seconds over the whole file, the last one
    aligned to its end (a file shorter than a window gives one zero-padded window)."""
    starts = sliding_window_starts(len(audio) / sample_rate, clip_s, hop_s)
    return starts, cut_windows(audio, sample_rate, starts, int(round(clip_s * sample_rate)))


@dataclass(frozen=True)
class WindowSettings:
    """How examples are cut from a recording; part of the cache key of the results."""

    clip_duration: float = 3.0
    extract_calls: bool = True
    call_band_hz: tuple[float, float] = DEFAULT_CALL_BAND_HZ
    call_threshold_k: float = 2.0
    energy_threshold_factor: float = 1.5
    quiet_segments_per_file: int = 2

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def window_settings_from_config(dataset_cfg: Mapping) -> WindowSettings:
    """The ``dataset`` config's window settings (a training run's, or the one stored in a
    checkpoint; keys an older checkpoint lacks take today's defaults)."""
    defaults = WindowSettings()
    band = dataset_cfg.get("call_band_hz") or defaults.call_band_hz
    return WindowSettings(
        clip_duration=float(dataset_cfg.get("clip_duration", defaults.clip_duration)),
        extract_calls=bool(dataset_cfg.get("extract_calls", defaults.extract_calls)),
        call_band_hz=(float(band[0]), float(band[1])),
        call_threshold_k=float(dataset_cfg.get("call_threshold_k", defaults.call_threshold_k)),
        energy_threshold_factor=float(dataset_cfg.get("energy_threshold_factor",
                                                      defaults.energy_threshold_factor)),
        quiet_segments_per_file=int(dataset_cfg.get("quiet_segments_per_file",
                                                    defaults.quiet_segments_per_file)),
    )


@dataclass(frozen=True)
class TrainingWindowStarts:
    call_starts: list[float]
    quiet_starts: list[float]
    used_fallback: bool  # no call was detected: the loudest window stands in


def training_window_starts(audio: np.ndarray, sample_rate: int, settings: WindowSettings,
                           bird: bool) -> TrainingWindowStarts:
    """Where training takes examples from one recording.

    A bird recording gives a window around each detected call (or consecutive windows when
    ``extract_calls`` is off) and a few quiet stretches for no_birds. Background audio gives
    its most energetic window when it is short (ESC-50's 5 s clips, so the sound is really in
    it), else consecutive windows.
    """
    clip = settings.clip_duration
    total_s = len(audio) / sample_rate
    if not bird:
        if total_s <= 2 * clip:
            starts = [round(loudest_window_start(audio, sample_rate, clip,
                                                 (20.0, sample_rate / 2)), 4)]
        else:
            starts = sliding_window_starts(total_s, clip, clip)
        return TrainingWindowStarts(starts, [], False)
    if settings.extract_calls:
        calls, fallback = detect_call_windows(
            audio, sample_rate, clip, settings.call_band_hz, k=settings.call_threshold_k
        )
    else:
        calls, fallback = sliding_window_starts(total_s, clip, clip), False
    quiet = find_quiet_segments(audio, sample_rate, clip, settings.energy_threshold_factor,
                                settings.quiet_segments_per_file, settings.call_band_hz)
    return TrainingWindowStarts(calls, quiet, fallback)

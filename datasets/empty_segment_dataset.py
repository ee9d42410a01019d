"""Quiet segments of bird recordings: real "no birds" audio with the recordings' own background.

A segment counts as quiet when the band-limited energy stays below
``energy_threshold_factor`` times the recording's noise floor for a whole clip. The noise
floor is a low percentile of the smoothed energy, which stays put however much of the
recording is song.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

from datasets.audio_utils import DEFAULT_CALL_BAND_HZ, _active_segments, band_energy_envelope

NOISE_FLOOR_PERCENTILE = 20.0
# Smoothing the energy over ~0.25 s stops frame-to-frame noise fluctuation from breaking up
# a quiet stretch, while a call (>= 50 ms at +10 dB) still lifts the smoothed level.
SMOOTHING_S = 0.25


def find_quiet_segments(
    audio: np.ndarray,
    sr: int,
    clip_duration: float,
    energy_threshold_factor: float = 1.5,
    max_segments: int = 2,
    band_hz: tuple[float, float] = DEFAULT_CALL_BAND_HZ,
) -> list[float]:
    """Start times (s) of up to ``max_segments`` non-overlapping quiet clips, longest runs first."""
    if max_segments <= 0 or len(audio) < clip_duration * sr:
        return []
    env = band_energy_envelope(audio, sr, band_hz)
    linear = 10.0 ** (env.db / 10.0)
    width = max(1, int(round(SMOOTHING_S / env.hop_s)))
    smooth = uniform_filter1d(linear, size=width, mode="nearest")
    floor = float(np.percentile(smooth, NOISE_FLOOR_PERCENTILE))
    quiet = smooth <= energy_threshold_factor * floor
    clip_frames = int(np.ceil(clip_duration / env.hop_s))
    total_s = len(audio) / sr
    runs = [(a, b) for a, b in _active_segments(quiet) if b - a >= clip_frames]
    runs.sort(key=lambda run: (-(run[1] - run[0]), run[0]))
    starts: list[float] = []
    for a, b in runs:
        # Tile each run with whole clips, centred so the margins to the calls are equal.
        n_fit = (b - a) // clip_frames
        margin = ((b - a) - n_fit * clip_frames) // 2
        for i in range(n_fit):
            if len(starts) >= max_segments:
                return sorted(starts)
            start_s = env.frame_to_seconds(a + margin + i * clip_frames)
            starts.append(round(min(start_s, total_s - clip_duration), 4))
    return sorted(starts)

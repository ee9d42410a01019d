"""The one place where audio is decoded, downmixed, resampled, padded and searched for calls.

Every stage (training, no-birds generation, soft-label extraction, benchmark, edge inference)
goes through these functions so that the student and the teacher see identical samples.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from common.errors import UserError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".mp3", ".flac", ".ogg")

# Bird vocalisations sit above the wind / handling-noise rumble; eagle-owl hoots reach down to
# about 300 Hz, so the default band starts there.
DEFAULT_CALL_BAND_HZ: tuple[float, float] = (300.0, 11000.0)

# Shorter than this cannot hold a meaningful call; such files are rejected as "very short".
MIN_AUDIO_SECONDS = 0.1


class AudioLoadError(UserError, RuntimeError):
    """A file that cannot be used as audio; the message says why (shown to the user)."""


def is_audio_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode by content, never by extension: real '.mp3' files are sometimes WAV."""
    try:
        # Bytes, so a name that is not valid UTF-8 opens (soundfile encodes str strictly).
        data, sr = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
        return data, int(sr)
    except Exception as sf_error:  # noqa: BLE001 - any decoder failure means "try the fallback"
        try:
            # audioread (through librosa) handles formats libsndfile lacks when ffmpeg exists.
            import warnings

            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, sr = librosa.load(str(path), sr=None, mono=False)
            data = np.atleast_2d(data).T.astype(np.float32)
            return data, int(sr)
        except Exception:  # noqa: BLE001
            raise AudioLoadError(decode_failure_reason(sf_error)) from sf_error


def decode_failure_reason(error: Exception) -> str:
    """What to tell the user when no decoder reads a file that exists.

    libsndfile answers "File does not exist or is not a regular file" for tiny or truncated
    files it cannot parse; the file does exist (we checked), so that text would mislead.
    """
    detail = str(error)
    if "does not exist" in detail or "not a regular file" in detail:
        return "cannot decode audio (not a recognised audio format, or truncated or corrupt)"
    return f"cannot decode audio ({detail})"


def to_mono(data: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,), averaging channels."""
    if data.ndim == 1:
        return data
    return data.mean(axis=1)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | Path, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Load any supported file as mono float32 at ``target_sr`` (or its own rate).

    Raises AudioLoadError for missing, undecodable, empty, very short or non-finite audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioLoadError("file not found")
    if path.stat().st_size == 0:
        raise AudioLoadError("zero-length file")
    data, sr = _decode(path)
    if data.size == 0:
        raise AudioLoadError("file holds no samples")
    if not np.isfinite(data).all():
        raise AudioLoadError("audio contains NaN or infinite samples")
    audio = to_mono(data)
    if len(audio) < MIN_AUDIO_SECONDS * sr:
        raise AudioLoadError(f"audio is very short ({len(audio) / sr:.3f} s)")
    if target_sr is not None:
        audio = resample(audio, sr, target_sr)
        sr = target_sr
    return np.ascontiguousarray(audio, dtype=np.float32), sr


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header, without decoding the whole file."""
    try:
        return float(sf.info(os.fsencode(path)).duration)
    except Exception as error:  # noqa: BLE001
        raise AudioLoadError(f"cannot read audio header ({error})") from error


def pad_or_crop(audio: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Exactly ``length`` samples starting at ``offset``, zero-padded past the end."""
    offset = max(0, int(offset))
    window = audio[offset : offset + length]
    if len(window) < length:
        window = np.pad(window, (0, length - len(window)))
    return window


def peak_normalise(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio if top == 0.0 else audio * (peak / top)


@dataclass(frozen=True)
class Envelope:
    """Band-limited energy per frame, in dB, with the frame hop in seconds."""

    db: np.ndarray
    hop_s: float

    def frame_to_seconds(self, frame: int | float) -> float:
        return float(frame) * self.hop_s


def band_energy_envelope(
    audio: np.ndarray,
    sr: int,
    band_hz: tuple[float, float] = DEFAULT_CALL_BAND_HZ,
    frame_s: float = 0.032,
    hop_s: float = 0.01,
) -> Envelope:
    """Energy in ``band_hz`` per short frame (dB); the band-pass keeps wind and thumps out."""
    n_fft = int(2 ** np.ceil(np.log2(frame_s * sr)))
    hop = max(1, int(round(hop_s * sr)))
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    n_frames = 1 + (len(audio) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop][:n_frames]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    low, high = band_hz[0], min(band_hz[1], sr / 2)
    in_band = (freqs >= low) & (freqs <= high)
    energy = spectrum[:, in_band].sum(axis=1) + 1e-12
    return Envelope(db=10.0 * np.log10(energy), hop_s=hop / sr)


# The noise floor is a low percentile rather than the median: in a song-filled excerpt the
# median frame is already a call, and a median-based threshold then misses all but the peaks.
NOISE_FLOOR_PERCENTILE = 30.0


def robust_threshold_db(envelope_db: np.ndarray, k: float, min_rise_db: float) -> float:
    """noise floor + k * MAD, but never less than ``min_rise_db`` above the floor.

    The floor keeps a perfectly stationary background (MAD ~ 0) from triggering on noise.
    """
    floor = float(np.percentile(envelope_db, NOISE_FLOOR_PERCENTILE))
    mad = 1.4826 * float(np.median(np.abs(envelope_db - np.median(envelope_db))))
    return floor + max(k * mad, min_rise_db)


def _active_segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges where ``mask`` is True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@dataclass(frozen=True)
class CallEvent:
    start_s: float
    end_s: float
    peak_db: float


def detect_call_events(
    audio: np.ndarray,
    sr: int,
    band_hz: tuple[float, float] = DEFAULT_CALL_BAND_HZ,
    k: float = 2.0,
    min_rise_db: float = 6.0,
    min_call_s: float = 0.05,
    merge_gap_s: float = 0.3,
) -> list[CallEvent]:
    """Stretches whose band energy rises above an adaptive threshold, merged over short gaps."""
    # scipy only here: the device runtime loads audio with this module and has no scipy.
    from scipy.ndimage import median_filter

    env = band_energy_envelope(audio, sr, band_hz)
    # A short median filter removes single-frame clicks (handling noise) before thresholding.
    smooth = median_filter(env.db, size=5, mode="nearest")
    threshold = robust_threshold_db(smooth, k, min_rise_db)
    segments = _active_segments(smooth > threshold)
    merged: list[list[int]] = []
    gap_frames = merge_gap_s / env.hop_s
    for start, end in segments:
        if merged and start - merged[-1][1] <= gap_frames:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    events = []
    for start, end in merged:
        if (end - start) * env.hop_s < min_call_s:
            continue
        events.append(
            CallEvent(
                start_s=env.frame_to_seconds(start),
                end_s=env.frame_to_seconds(end),
                peak_db=float(smooth[start:end].max()),
            )
        )
    return events


def loudest_window_start(audio: np.ndarray, sr: int, clip_duration: float,
                         band_hz: tuple[float, float] = DEFAULT_CALL_BAND_HZ) -> float:
    """Start (s) of the clip with the most band energy: the fallback when no call is detected."""
    total = len(audio) / sr
    if total <= clip_duration:
        return 0.0
    env = band_energy_envelope(audio, sr, band_hz)
    width = max(1, int(round(clip_duration / env.hop_s)))
    linear = 10.0 ** (env.db / 10.0)
    sums = np.convolve(linear, np.ones(width), mode="valid")
    start = env.frame_to_seconds(int(np.argmax(sums)))
    return float(min(start, total - clip_duration))


def windows_covering_events(
    events: list[CallEvent], total_s: float, clip_duration: float
) -> list[float]:
    """Window starts so that every event is inside a window, without near-duplicate windows.

    A call that fits is centred in its window; neighbouring calls that already sit in that
    window are not given one of their own; calls longer than a window are tiled.
    """
    latest_start = max(0.0, total_s - clip_duration)
    starts: list[float] = []

    def covered(t0: float, t1: float) -> bool:
        return any(s <= t0 and t1 <= s + clip_duration for s in starts)

    for event in events:
        length = event.end_s - event.start_s
        if length <= clip_duration:
            if covered(event.start_s, event.end_s):
                continue
            centre = 0.5 * (event.start_s + event.end_s)
            starts.append(float(np.clip(centre - clip_duration / 2, 0.0, latest_start)))
            continue
        t = event.start_s
        while t < event.end_s:
            if not covered(t, min(t + clip_duration, event.end_s)):
                starts.append(float(min(t, latest_start)))
            t += clip_duration
    return sorted(set(round(s, 4) for s in starts))


def detect_call_windows(
    audio: np.ndarray,
    sr: int,
    clip_duration: float,
    band_hz: tuple[float, float] = DEFAULT_CALL_BAND_HZ,
    k: float = 2.0,
    min_rise_db: float = 6.0,
) -> tuple[list[float], bool]:
    """Start times (s) of every clip-long window that holds a detected call.

    Returns (starts, used_fallback). When nothing rises above the threshold, the loudest
    window is used so that a quiet but valid recording still contributes one example.
    """
    total = len(audio) / sr
    events = detect_call_events(audio, sr, band_hz, k=k, min_rise_db=min_rise_db)
    starts = windows_covering_events(events, total, clip_duration)
    if starts:
        return starts, False
    return [loudest_window_start(audio, sr, clip_duration, band_hz)], True


def sliding_window_starts(total_s: float, clip_duration: float, hop_s: float) -> list[float]:
    """Regular window starts over a whole file; the last window is aligned to the end."""
    if total_s <= clip_duration:
        return [0.0]
    starts = list(np.arange(0.0, total_s - clip_duration + 1e-9, hop_s))
    if total_s - clip_duration - starts[-1] > 1e-6:
        starts.append(total_s - clip_duration)
    return [round(float(s), 4) for s in starts]

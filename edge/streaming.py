"""Windows of recordings of any length, read block by block with bounded memory.

A one-hour 48 kHz stereo file is ~1.4 GB as float32; the reader never holds more than one
block of input plus a short resampling context and one window of output. Each block is
downmixed with ``to_mono`` and resampled with ``resample`` (the same functions training
used) together with ``RESAMPLE_CONTEXT_S`` of audio on each side, and only the block's own
span is kept: block boundaries fall on whole periods of the rate ratio, so the output is the
same as resampling the file whole (to float rounding), without seams.

Window starts follow ``sliding_window_starts``: every ``hop`` seconds, plus one window
aligned to the end when the hops do not reach it; a file shorter than a window gives one
zero-padded window.

Formats libsndfile cannot open (e.g. MP3 on an old libsndfile, or AAC) fall back to
``load_audio`` (whole file, audioread), refused above ``max_fallback_mb``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from datasets.audio_utils import (
    MIN_AUDIO_SECONDS,
    AudioLoadError,
    load_audio,
    resample,
    to_mono,
)

log = logging.getLogger(__name__)

DEFAULT_BLOCK_S = 60.0
# soxr's HQ filter settles within a few ms; 50 ms of context on each side is ample.
RESAMPLE_CONTEXT_S = 0.05
DEFAULT_MAX_FALLBACK_MB = 200.0


@dataclass
class StreamStats:
    """Filled while streaming: what was read, for the summary and for tests."""

    input_sample_rate: int = 0
    channels: int = 0
    input_frames: int = 0
    output_samples: int = 0
    max_read_frames: int = 0  # largest single read from the file
    max_buffered_samples: int = 0  # largest input + output buffer held at once
    fallback: bool = False

    @property
    def duration_s(self) -> float:
        return self.input_frames / self.input_sample_rate if self.input_sample_rate else 0.0


def _check_finite(block: np.ndarray) -> None:
    if not np.isfinite(block).all():
        raise AudioLoadError("audio contains NaN or infinite samples")


def _open(path: Path) -> sf.SoundFile | None:
    if not path.is_file():
        raise AudioLoadError("file not found")
    if path.stat().st_size == 0:
        raise AudioLoadError("zero-length file")
    try:
        return sf.SoundFile(os.fsencode(path))  # bytes: any file name opens
    except Exception as error:  # noqa: BLE001 - libsndfile cannot read it: try the fallback
        log.debug("soundfile cannot open %s (%s); falling back to load_audio", path, error)
        return None


def resampled_blocks(path: str | Path, target_sr: int, block_s: float = DEFAULT_BLOCK_S,
                     stats: StreamStats | None = None,
                     max_fallback_mb: float = DEFAULT_MAX_FALLBACK_MB) -> Iterator[np.ndarray]:
    """Consecutive mono float32 blocks at ``target_sr`` covering the whole file.

    Raises ``AudioLoadError`` (possibly after some blocks were yielded) for unreadable,
    empty, very short or non-finite audio.
    """
    path = Path(path)
    stats = stats if stats is not None else StreamStats()
    handle = _open(path)
    if handle is None:
        yield from _fallback_blocks(path, target_sr, stats, max_fallback_mb)
        return
    with handle:
        sr = int(handle.samplerate)
        stats.input_sample_rate, stats.channels = sr, int(handle.channels)
        # Block boundaries on whole periods of the rate ratio keep input and output aligned.
        period = sr // math.gcd(sr, target_sr)
        block = max(period, int(round(block_s * sr)) // period * period)
        context = 0 if sr == target_sr else math.ceil(RESAMPLE_CONTEXT_S * sr / period) * period
        buffer = np.zeros(0, dtype=np.float32)  # input samples from buffer_start on
        buffer_start = 0  # input index of buffer[0]
        position = 0  # input index of the next block to emit
        eof = False
        while True:
            wanted_end = position + block + context
            while not eof and buffer_start + len(buffer) < wanted_end:
                try:
                    frames = handle.read(wanted_end - buffer_start - len(buffer),
                                         dtype="float32", always_2d=True)
                except Exception as error:  # noqa: BLE001 - a corrupt frame mid-file
                    raise AudioLoadError(f"cannot decode audio ({error})") from error
                if len(frames) == 0:
                    eof = True
                    break
                stats.max_read_frames = max(stats.max_read_frames, len(frames))
                _check_finite(frames)
                buffer = np.concatenate([buffer, to_mono(frames).astype(np.float32)])
                stats.input_frames += len(frames)
            stats.max_buffered_samples = max(stats.max_buffered_samples, len(buffer))
            available = buffer_start + len(buffer)
            if position == 0 and eof and available < MIN_AUDIO_SECONDS * sr:
                raise AudioLoadError(
                    "file holds no samples" if available == 0
                    else f"audio is very short ({available / sr:.3f} s)"
                )
            end = min(position + block, available)
            if end <= position:
                break
            final = eof and end == available
            low = max(0, position - context)
            high = available if final else min(available, end + context)
            chunk = buffer[low - buffer_start : high - buffer_start]
            out = resample(chunk, sr, target_sr)
            first = (position - low) * target_sr // sr
            last = len(out) if final else first + (end - position) * target_sr // sr
            piece = np.ascontiguousarray(out[first:last], dtype=np.float32)
            stats.output_samples += len(piece)
            yield piece
            position = end
            if final:
                break
            drop = max(0, position - context - buffer_start)
            buffer, buffer_start = buffer[drop:], buffer_start + drop


def _fallback_blocks(path: Path, target_sr: int, stats: StreamStats,
                     max_fallback_mb: float) -> Iterator[np.ndarray]:
    size_mb = path.stat().st_size / 1e6
    if size_mb > max_fallback_mb:
        raise AudioLoadError(
            f"this format cannot be streamed and the file is {size_mb:.0f} MB (limit "
            f"{max_fallback_mb:.0f} MB for whole-file decoding); convert it to WAV or FLAC"
        )
    audio, _ = load_audio(path, target_sr)
    stats.fallback = True
    stats.input_sample_rate, stats.channels = target_sr, 1
    stats.input_frames = stats.output_samples = len(audio)
    stats.max_read_frames = stats.max_buffered_samples = len(audio)
    yield audio


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float  # start + window, capped at the file's end
    audio: np.ndarray  # (window_samples,) float32


def stream_windows(path: str | Path, sample_rate: int, window_s: float, hop_s: float,
                   block_s: float = DEFAULT_BLOCK_S, stats: StreamStats | None = None,
                   max_fallback_mb: float = DEFAULT_MAX_FALLBACK_MB) -> Iterator[Window]:
    """Sliding windows of ``window_s`` every ``hop_s`` over the whole file, in order."""
    if hop_s <= 0 or window_s <= 0:
        raise ValueError("window and hop must be positive")
    stats = stats if stats is not None else StreamStats()
    size = int(round(window_s * sample_rate))
    buffer = np.zeros(0, dtype=np.float32)  # output samples from buffer_start on
    buffer_start = 0
    index = 0  # next regular window
    last_start = None  # sample index of the last window emitted

    def start_of(i: int) -> int:
        return int(round(i * hop_s * sample_rate))

    blocks = resampled_blocks(path, sample_rate, block_s, stats, max_fallback_mb)
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        stats.max_buffered_samples = max(stats.max_buffered_samples, len(buffer))
        while start_of(index) + size <= buffer_start + len(buffer):
            start = start_of(index)
            chunk = buffer[start - buffer_start : start - buffer_start + size]
            yield Window(start / sample_rate, (start + size) / sample_rate, chunk.copy())
            last_start, index = start, index + 1
        # Keep what the next window needs, and always the last window's worth of samples
        # (the end-aligned window is cut from it).
        keep_from = min(start_of(index), buffer_start + len(buffer) - size)
        drop = max(0, keep_from - buffer_start)
        buffer, buffer_start = buffer[drop:], buffer_start + drop

    total = buffer_start + len(buffer)
    if total <= size:
        if last_start is None:  # shorter than one window: one zero-padded window
            padded = np.zeros(size, dtype=np.float32)
            padded[:total] = buffer[:total]
            yield Window(0.0, total / sample_rate, padded)
        return
    tail = total - size
    if last_start is None or (tail - last_start) / sample_rate > 1e-6:
        chunk = buffer[tail - buffer_start :]
        yield Window(tail / sample_rate, total / sample_rate, chunk.copy())

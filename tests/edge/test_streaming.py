"""Block-wise reading: same windows as decoding the whole file, with bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from datasets.audio_utils import AudioLoadError, load_audio, pad_or_crop, sliding_window_starts
from edge.streaming import RESAMPLE_CONTEXT_S, StreamStats, resampled_blocks, stream_windows

SR = 32000


def _write(path, seconds, sr, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)
    sf.write(path, audio, sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    ("sr", "channels", "seconds", "block_s", "hop_s"),
    [(44100, 2, 47.3, 5.0, 1.0), (32000, 1, 20.5, 3.0, 1.5), (48000, 1, 9.0, 0.7, 0.5)],
)
def test_windows_match_whole_file_decoding(tmp_path, sr, channels, seconds, block_s, hop_s):
    path = _write(tmp_path / "long.wav", seconds, sr, channels)
    reference, _ = load_audio(path, SR)
    stats = StreamStats()
    windows = list(stream_windows(path, SR, 3.0, hop_s, block_s=block_s, stats=stats))

    expected = sliding_window_starts(len(reference) / SR, 3.0, hop_s)
    np.testing.assert_allclose([w.start_s for w in windows], expected, atol=1e-4)
    for window in windows:
        want = pad_or_crop(reference, 3 * SR, int(round(window.start_s * SR)))
        np.testing.assert_allclose(window.audio, want, atol=1e-5)
    assert stats.output_samples == len(reference)
    assert windows[-1].end_s == pytest.approx(len(reference) / SR)
    # Never more than one block (plus resampling context) read at once.
    assert stats.max_read_frames <= (block_s + 2 * RESAMPLE_CONTEXT_S) * sr + 1


def test_memory_stays_bounded_on_a_file_much_longer_than_a_block(tmp_path):
    # 10 minutes at 48 kHz: 115 MB as float32 if decoded whole.
    path = tmp_path / "ten_minutes.wav"
    block = np.random.default_rng(1).standard_normal(48000 * 60).astype(np.float32) * 0.1
    with sf.SoundFile(path, "w", 48000, 1, subtype="PCM_16") as out:
        for _ in range(10):
            out.write(block)
    stats = StreamStats()
    tracemalloc.start()
    try:
        count = sum(1 for _ in stream_windows(path, SR, 3.0, 3.0, block_s=10.0, stats=stats))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200
    assert stats.duration_s == pytest.approx(600.0)
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB"  # a few blocks, not the 115 MB file
    assert stats.max_buffered_samples <= (10.0 + 2 * RESAMPLE_CONTEXT_S) * 48000 + 1


def test_short_file_gives_one_padded_window(tmp_path):
    path = _write(tmp_path / "short.wav", 1.2, 22050)
    windows = list(stream_windows(path, SR, 3.0, 1.0))
    assert len(windows) == 1
    assert windows[0].start_s == 0.0 and windows[0].end_s == pytest.approx(1.2, abs=1e-3)
    assert len(windows[0].audio) == 3 * SR
    assert not windows[0].audio[int(1.25 * SR):].any()


@pytest.mark.parametrize("kind", ["empty", "garbage", "nan", "tiny"])
def test_unusable_files_raise_audio_load_error(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    elif kind == "nan":
        audio = np.zeros(SR * 2, dtype=np.float32)
        audio[SR] = np.nan
        sf.write(path, audio, SR, subtype="FLOAT")
    else:
        _write(path, 0.05, SR)
    with pytest.raises(AudioLoadError):
        list(resampled_blocks(path, SR, block_s=0.5))

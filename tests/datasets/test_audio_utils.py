import numpy as np
import pytest
import soundfile as sf

from datasets.audio_utils import (
    AudioLoadError,
    detect_call_events,
    detect_call_windows,
    load_audio,
    pad_or_crop,
    sliding_window_starts,
)
from tests.conftest import tone_burst, write_wav

SR = 32000


def recording_with_calls(call_times, total_s=20.0, snr_noise=0.01, seed=0, wind=False):
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, snr_noise, int(total_s * SR)).astype(np.float32)
    if wind:
        # Strong low-frequency rumble: must not be taken for calls.
        t = np.arange(len(audio)) / SR
        audio += (0.3 * np.sin(2 * np.pi * 40 * t) * (1 + np.sin(2 * np.pi * 0.3 * t))).astype(
            np.float32
        )
    for start, freq in call_times:
        burst = tone_burst(SR, freq, 0.5, 0.3)
        i = int(start * SR)
        audio[i : i + len(burst)] += burst
    return audio


def test_every_planted_call_is_detected_and_windowed():
    calls = [(2.0, 3000), (7.5, 4500), (14.0, 2500), (17.5, 6000)]
    audio = recording_with_calls(calls)
    events = detect_call_events(audio, SR)
    assert len(events) == len(calls)
    for event, (start, _) in zip(events, calls, strict=True):
        assert abs(event.start_s - start) < 0.15
        assert abs(event.end_s - (start + 0.5)) < 0.15
    starts, fallback = detect_call_windows(audio, SR, 3.0)
    assert not fallback
    for start, _ in calls:
        assert any(s <= start and start + 0.5 <= s + 3.0 for s in starts)
    # Nearby calls share a window rather than producing near-duplicates.
    assert len(starts) <= len(calls)


def test_detection_ignores_wind_rumble():
    calls = [(3.0, 3500), (12.0, 5000)]
    audio = recording_with_calls(calls, wind=True)
    events = detect_call_events(audio, SR)
    assert len(events) == 2
    assert [round(e.start_s) for e in events] == [3, 12]


def test_fallback_returns_loudest_window_when_no_call():
    audio = np.random.default_rng(1).normal(0, 0.01, 10 * SR).astype(np.float32)
    starts, fallback = detect_call_windows(audio, SR, 3.0)
    assert fallback and len(starts) == 1 and 0.0 <= starts[0] <= 7.0


def test_load_downmixes_resamples_and_reads_by_content(tmp_path):
    stereo = np.stack([tone_burst(44100, 1000, 1.0), tone_burst(44100, 1000, 1.0) * 0.5], axis=1)
    # WAV content behind an .mp3 name, as happens with real downloads.
    path = tmp_path / "fake.mp3"
    sf.write(path, stereo, 44100, format="WAV")
    audio, sr = load_audio(path, SR)
    assert sr == SR and audio.ndim == 1
    assert abs(len(audio) - SR) <= 2
    assert audio.dtype == np.float32


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.wav", b"", "zero-length"),
        ("text.wav", b"this is not audio at all" * 10, "cannot decode"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioLoadError, match=message):
        load_audio(path, SR)


def test_nan_and_very_short_audio_rejected(tmp_path):
    nan_audio = np.zeros(SR, dtype=np.float32)
    nan_audio[100] = np.nan
    write_wav(tmp_path / "nan.wav", nan_audio, SR)
    sf.write(tmp_path / "nan.flac", np.zeros(SR), SR)  # a valid control file
    with pytest.raises(AudioLoadError, match="NaN"):
        # PCM cannot hold NaN, so write float WAV explicitly.
        sf.write(tmp_path / "nanf.wav", nan_audio, SR, subtype="FLOAT")
        load_audio(tmp_path / "nanf.wav", SR)
    write_wav(tmp_path / "short.wav", np.zeros(100, dtype=np.float32), SR)
    with pytest.raises(AudioLoadError, match="very short"):
        load_audio(tmp_path / "short.wav", SR)
    with pytest.raises(AudioLoadError, match="not found"):
        load_audio(tmp_path / "missing.wav", SR)


def test_pad_or_crop_and_sliding_windows():
    audio = np.arange(10, dtype=np.float32)
    assert pad_or_crop(audio, 4, 8).tolist() == [8, 9, 0, 0]
    assert sliding_window_starts(2.0, 3.0, 1.0) == [0.0]
    assert sliding_window_starts(7.5, 3.0, 2.0) == [0.0, 2.0, 4.0, 4.5]

"""Call detection and quiet segments on the demo corpus, whose call times are known."""

import numpy as np
import pandas as pd

from datasets.audio_utils import detect_call_events, detect_call_windows, load_audio
from datasets.empty_segment_dataset import find_quiet_segments

SR = 32000
CLIP = 3.0


def _files(demo_corpus):
    annotations = pd.read_csv(demo_corpus.annotations_csv)
    for path, calls in annotations.groupby("path"):
        audio, _ = load_audio(demo_corpus.bird_dir / path, SR)
        yield path, audio, calls


def test_planted_calls_are_found_within_tolerance(demo_corpus):
    found = total = 0
    for _, audio, calls in _files(demo_corpus):
        events = detect_call_events(audio, SR)
        for start, end in zip(calls["start_s"], calls["end_s"], strict=True):
            total += 1
            # A detection overlapping the planted call, starting within 0.3 s of it.
            if any(e.start_s < end and e.end_s > start and abs(e.start_s - start) < 0.3
                   for e in events):
                found += 1
    assert found / total >= 0.9, f"{found}/{total} planted calls detected"


def test_every_planted_call_lies_in_some_window(demo_corpus):
    covered = total = 0
    for _, audio, calls in _files(demo_corpus):
        starts, _ = detect_call_windows(audio, SR, CLIP)
        for start, end in zip(calls["start_s"], calls["end_s"], strict=True):
            total += 1
            middle = 0.5 * (start + end)
            covered += any(s <= middle <= s + CLIP for s in starts)
    assert covered / total >= 0.9


def test_quiet_segments_avoid_calls(demo_corpus):
    n_segments = 0
    for _, audio, calls in _files(demo_corpus):
        for q in find_quiet_segments(audio, SR, CLIP, energy_threshold_factor=1.5, max_segments=2):
            n_segments += 1
            for start, end in zip(calls["start_s"], calls["end_s"], strict=True):
                assert q + CLIP <= start or q >= end, "quiet segment overlaps a call"
    assert n_segments > 0


def test_quiet_segments_on_generated_recording_with_known_silence():
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.01, 20 * SR).astype(np.float32)
    t = np.arange(int(0.4 * SR)) / SR
    for start in [1.0, 2.0, 3.0, 12.0, 13.0, 18.0]:  # quiet spans: 3.4-12 s and 13.4-18 s
        i = int(start * SR)
        audio[i : i + len(t)] += 0.3 * np.sin(2 * np.pi * 4000 * t) * np.hanning(len(t))
    segments = find_quiet_segments(audio, SR, CLIP, max_segments=5)
    assert segments
    for s in segments:
        assert (3.4 <= s and s + CLIP <= 12.0) or (13.4 <= s and s + CLIP <= 18.0)
    assert len(segments) == 3  # two fit in the 8.6 s gap, one in the 4.6 s gap


def test_long_recording_has_annotated_calls_and_is_idempotent(tmp_path):
    import soundfile as sf

    from demo.corpus import write_long_recording

    path = write_long_recording(tmp_path / "long.wav", minutes=1.0)
    calls = pd.read_csv(tmp_path / "long.annotations.csv")
    assert sf.info(path).duration == 60.0
    assert len(calls) >= 4 and (calls["end_s"] <= 60.0).all()
    assert (calls["start_s"].diff().dropna() > 0).all()
    mtime = path.stat().st_mtime_ns
    write_long_recording(path, minutes=1.0)
    assert path.stat().st_mtime_ns == mtime

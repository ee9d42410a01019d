"""Tests for the synthetic demo corpus generator (demo/corpus.py)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from demo.corpus import DEMO_SPECIES, DemoCorpus, generate_demo_corpus, main

ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
ESC50_TARGETS = {"rain": 10, "wind": 16, "engine": 44, "clock_tick": 38, "chirping_birds": 14}
# Small arguments for the tests that generate several corpora (keeps the suite fast).
SMALL = {"recordings_per_species": 2, "esc50_clips_per_category": 2}
TINY = {"recordings_per_species": 1, "esc50_clips_per_category": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DemoCorpus:
    """One corpus with the default arguments, shared by the read-only tests."""
    return generate_demo_corpus(tmp_path_factory.mktemp("demo"))


def _annotations(corpus: DemoCorpus) -> dict[str, list[tuple[float, float]]]:
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with corpus.annotations_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            spans[row["path"]].append((float(row["start_s"]), float(row["end_s"])))
    return {path: sorted(s) for path, s in spans.items()}


def _bird_files(corpus: DemoCorpus) -> list[Path]:
    return sorted(p for p in corpus.bird_dir.rglob("*") if p.is_file())


def _quiet_stretches(
    spans: list[tuple[float, float]], duration: float
) -> list[tuple[float, float]]:
    edges = [0.0] + [t for span in spans for t in span] + [duration]
    return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]


def _bytes_of(root: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.suffix in suffixes
    }


def test_layout(corpus: DemoCorpus) -> None:
    assert corpus.species == DEMO_SPECIES
    assert sorted(p.name for p in corpus.bird_dir.iterdir()) == sorted(DEMO_SPECIES)
    for species in DEMO_SPECIES:
        assert len(list((corpus.bird_dir / species).iterdir())) == 8
    files = _bird_files(corpus)
    assert {p.suffix for p in files} == {".wav", ".flac", ".mp3"}
    assert len({p.stem for p in files}) == len(files)  # names are unique xeno-canto-like ids
    assert all(p.stem.startswith("XC9") and len(p.stem) == 8 for p in files)
    assert (corpus.root / "DEMO_CORPUS.txt").read_text().startswith("SYNTHETIC")
    infos = [sf.info(str(p)) for p in files]
    assert {i.samplerate for i in infos} == {32000, 44100, 48000}
    assert {i.channels for i in infos} == {1, 2}
    assert all(8.0 <= i.duration <= 16.5 for i in infos)
    assert all(np.abs(sf.read(str(p))[0]).max() <= 0.95 for p in files)  # mp3 may overshoot


def test_esc50_folder(corpus: DemoCorpus) -> None:
    meta = pd.read_csv(corpus.esc50_dir / "meta" / "esc50.csv")
    assert list(meta.columns) == ESC50_COLUMNS
    assert len(meta) == 6 * len(ESC50_TARGETS)
    assert dict(zip(meta.category, meta.target, strict=True)) == ESC50_TARGETS
    assert set(meta.fold) == {1, 2, 3, 4, 5}
    assert meta.groupby("src_file").size().eq(2).all()
    assert meta.groupby("src_file").fold.nunique().eq(1).all()
    assert meta.esc10.dtype == bool
    for row in meta.itertuples():
        assert row.filename == f"{row.fold}-{row.src_file}-{row.take}-{row.target}.wav"
        info = sf.info(str(corpus.esc50_dir / "audio" / row.filename))
        assert (info.samplerate, info.channels, info.frames) == (44100, 1, 220500)
        assert (info.format, info.subtype) == ("WAV", "PCM_16")
    assert len(list((corpus.esc50_dir / "audio").iterdir())) == len(meta)


def test_exactly_one_fake_mp3(corpus: DemoCorpus) -> None:
    mp3s = [p for p in _bird_files(corpus) if p.suffix == ".mp3"]
    formats = [sf.info(str(p)).format for p in mp3s]
    assert formats.count("WAV") == 1
    assert formats.count("MP3") == len(mp3s) - 1 >= 1
    fake = mp3s[formats.index("WAV")]
    audio, sr = sf.read(str(fake))  # libsndfile goes by content, not by the extension
    assert audio.size > 0 and sr > 0


def test_annotations_are_consistent(corpus: DemoCorpus) -> None:
    spans_by_file = _annotations(corpus)
    files = _bird_files(corpus)
    assert set(spans_by_file) == {p.relative_to(corpus.bird_dir).as_posix() for p in files}
    for path, spans in spans_by_file.items():
        duration = sf.info(str(corpus.bird_dir / path)).duration
        assert 2 <= len(spans) <= 5
        for start, end in spans:
            assert 0.0 <= start < end <= duration
        for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
            assert next_start - end >= 0.99  # non-overlapping, with ~1 s gaps
        quiet = _quiet_stretches(spans, duration)
        assert max(b - a for a, b in quiet) >= 3.5, path
    with corpus.annotations_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["path"].split("/")[0] == row["species"] for row in rows)


def test_planted_calls_are_audible(corpus: DemoCorpus) -> None:
    for path, spans in _annotations(corpus).items():
        audio, sr = sf.read(str(corpus.bird_dir / path), always_2d=True)
        sos = butter(4, [250.0, 10000.0], btype="bandpass", fs=sr, output="sos")
        band = sosfiltfilt(sos, audio.mean(axis=1))
        calls = np.concatenate([band[int(a * sr) : int(b * sr)] for a, b in spans])
        a, b = max(_quiet_stretches(spans, len(band) / sr), key=lambda s: s[1] - s[0])
        # Trim the edges so filter ringing from a neighbouring call does not count as quiet.
        quiet = band[int((a + 0.1) * sr) : int((b - 0.1) * sr)]
        ratio = np.sqrt(np.mean(calls**2) / np.mean(quiet**2))
        assert ratio >= 2.0, f"{path}: call/quiet band RMS ratio {ratio:.2f}"


def test_deterministic(tmp_path: Path) -> None:
    first = generate_demo_corpus(tmp_path / "a", seed=3, **SMALL)
    second = generate_demo_corpus(tmp_path / "b", seed=3, **SMALL)
    other = generate_demo_corpus(tmp_path / "c", seed=4, **SMALL)
    same = _bytes_of(first.root, (".wav", ".flac"))
    assert same and same == _bytes_of(second.root, (".wav", ".flac"))
    assert first.annotations_csv.read_bytes() == second.annotations_csv.read_bytes()
    assert same != _bytes_of(other.root, (".wav", ".flac"))
    assert first.annotations_csv.read_bytes() != other.annotations_csv.read_bytes()


def test_rerun_is_noop_and_other_args_need_overwrite(tmp_path: Path) -> None:
    corpus = generate_demo_corpus(tmp_path, **TINY)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert generate_demo_corpus(tmp_path, **TINY) == corpus
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_demo_corpus(tmp_path, seed=1, **TINY)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes


def test_overwrite_replaces_the_corpus(tmp_path: Path) -> None:
    generate_demo_corpus(tmp_path, **SMALL)
    (tmp_path / "keep.txt").write_text("not ours")
    corpus = generate_demo_corpus(tmp_path, overwrite=True, **TINY)
    assert len(_bird_files(corpus)) == len(DEMO_SPECIES)  # no stale files left behind
    assert (tmp_path / "keep.txt").read_text() == "not ours"


def test_damaged_corpus_is_regenerated(tmp_path: Path) -> None:
    corpus = generate_demo_corpus(tmp_path, **TINY)
    victim = _bird_files(corpus)[0]
    original = victim.read_bytes()
    victim.unlink()
    generate_demo_corpus(tmp_path, **TINY)
    assert victim.read_bytes() == original


def test_foreign_data_is_not_clobbered(tmp_path: Path) -> None:
    (tmp_path / "bird_sound_dataset").mkdir()
    with pytest.raises(FileExistsError):
        generate_demo_corpus(tmp_path, **TINY)


def test_cli(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--recordings-per-species", "1", "--esc50-clips-per-category", "1"]
    with caplog.at_level("INFO", logger="demo.corpus"):
        assert main(argv) == 0
    assert "Bubo_bubo=1" in caplog.text and "ESC-50 clips: 5" in caplog.text
    assert (out / ".demo_corpus.json").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--recordings-per-species", "0"])
    assert exit_info.value.code == 2
    assert main(["--out", str(out), "--seed", "9"]) == 1  # different arguments, no --overwrite


def test_unlabelled_field_audio(tmp_path: Path) -> None:
    """The demo's teacher pool: audio with calls, no annotations, never the test recording."""
    from demo.corpus import write_long_recording, write_unlabelled_field

    files = write_unlabelled_field(tmp_path / "pool", files=2, minutes=0.25)
    assert [p.name for p in sorted((tmp_path / "pool").iterdir())] == [
        "field_01.wav", "field_02.wav"]  # nothing else: no annotation file in the pool
    first, second = (sf.read(p)[0] for p in files)
    assert len(first) == 15 * 32000 and not np.array_equal(first, second)
    test = sf.read(write_long_recording(tmp_path / "long.wav", minutes=0.25))[0]
    assert not np.array_equal(first, test) and not np.array_equal(second, test)
    # Deterministic and idempotent: a second call rewrites nothing.
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = write_unlabelled_field(tmp_path / "pool", files=2, minutes=0.25)
    assert [p.stat().st_mtime_ns for p in again] == mtimes
    other = write_unlabelled_field(tmp_path / "pool2", files=2, minutes=0.25)
    assert np.array_equal(sf.read(other[0])[0], first)

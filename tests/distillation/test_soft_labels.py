"""Soft-label extraction: format, resume after a kill, invalidation, alignment, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdnet.teacher import NON_EVENT_LABELS, BirdNetTeacher, no_birds_logit
from datasets.audio_utils import sliding_window_starts
from distillation.soft_label_records import read_record, record_path
from distillation.soft_labels import (
    ExtractionError,
    Location,
    SoftLabelError,
    SoftLabelStore,
    extract_soft_labels,
)
from tests.conftest import REPO_ROOT, tone_burst, write_wav

SPECIES = ["Bubo bubo", "Apus_apus", "Certhia familiaris_Eurasian Treecreeper"]
FOLDERS = ["Bubo_bubo", "Apus_apus", "Certhia_familiaris"]
HOP = 3.0


def recording(seconds: float, sr: int, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 0.01, int(seconds * sr)).astype(np.float32)
    burst = tone_burst(sr, freq, 0.6, 0.4)
    for start in np.arange(0.5, seconds - 0.7, 1.5):
        i = int(start * sr)
        audio[i : i + len(burst)] += burst
    return audio


def make_corpus(root: Path, files_per_species: int = 2, seconds: float = 4.0) -> Path:
    """Bubo_bubo and Apus_apus folders of short WAVs at other sample rates (no Certhia)."""
    bird_dir = root / "birds"
    kinds = [("Bubo_bubo", 44100, 500), ("Apus_apus", 32000, 6000)]
    for s, (folder, sr, freq) in enumerate(kinds):
        for i in range(files_per_species):
            audio = recording(seconds, sr, freq, seed=10 * s + i)
            write_wav(bird_dir / folder / f"rec{i}.wav", audio, sr)
    return bird_dir


@pytest.fixture(scope="module")
def teacher() -> BirdNetTeacher:
    return BirdNetTeacher(num_threads=1)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, teacher):
    """One extraction of a small corpus with a long file, bad files and no-birds samples."""
    root = tmp_path_factory.mktemp("corpus")
    bird_dir = make_corpus(root)
    write_wav(bird_dir / "Bubo_bubo" / "long.wav", recording(7.0, 48000, 450, 7), 48000)
    (bird_dir / "Apus_apus" / "empty.wav").write_bytes(b"")
    (bird_dir / "Apus_apus" / "not_audio.mp3").write_text("this is not audio")
    no_birds_dir = root / "no_birds"
    for i in range(2):
        noise = np.random.default_rng(100 + i).normal(0, 0.05, 3 * 32000).astype(np.float32)
        write_wav(no_birds_dir / "train" / f"noise{i}.wav", noise, 32000)
    output = root / "labels"
    summary = extract_soft_labels(
        SPECIES, output, bird_dir, no_birds_dir=no_birds_dir, hop=HOP, teacher=teacher,
        progress=False,
    )
    return output, bird_dir, no_birds_dir, summary


def test_metadata_describes_the_extraction(extracted):
    output, bird_dir, no_birds_dir, summary = extracted
    metadata = json.loads((output / "metadata.json").read_text())
    for key in (
        "species_order", "species", "birdnet_version", "sample_rate", "window", "hop", "created",
        "updated", "files_processed", "failed_files", "no_birds_signal", "non_event_classes",
        "files", "status", "settings_hash",
    ):
        assert key in metadata, key
    assert metadata["status"] == "complete"
    assert metadata["species_order"] == FOLDERS
    assert [s["birdnet_label"] for s in metadata["species"]] == [
        "Bubo bubo_Eurasian Eagle-Owl", "Apus apus_Common Swift",
        "Certhia familiaris_Eurasian Treecreeper",
    ]
    assert [s["has_folder"] for s in metadata["species"]] == [True, True, False]
    assert metadata["birdnet_version"] == "2.4"
    assert (metadata["sample_rate"], metadata["window"], metadata["hop"]) == (48000, 3.0, HOP)
    assert metadata["non_event_classes"] == list(NON_EVENT_LABELS)
    assert "p_bird" in metadata["no_birds_signal"]["definition"]
    assert metadata["files_processed"] == 7 == summary.computed
    assert sorted(metadata["files"]) == [
        "Apus_apus/rec0.wav", "Apus_apus/rec1.wav", "Bubo_bubo/long.wav", "Bubo_bubo/rec0.wav",
        "Bubo_bubo/rec1.wav", "no_birds/train/noise0.wav", "no_birds/train/noise1.wav",
    ]
    failed = {f["path"]: f for f in metadata["failed_files"]}
    assert set(failed) == {"Apus_apus/empty.wav", "Apus_apus/not_audio.mp3"}
    assert "zero-length" in failed["Apus_apus/empty.wav"]["reason"]
    assert failed["Apus_apus/not_audio.mp3"]["reason"]


def test_records_hold_every_window(extracted):
    output, *_ = extracted
    for key, duration, n_windows in [
        ("Bubo_bubo/long.wav", 7.0, 3),
        ("Apus_apus/rec0.wav", 4.0, 2),
        ("no_birds/train/noise0.wav", 3.0, 1),
    ]:
        data = read_record(output, key)
        starts = data["starts"]
        np.testing.assert_allclose(starts, sliding_window_starts(duration, 3.0, HOP))
        assert len(starts) == n_windows
        assert data["target_logits"].shape == (n_windows, 3)
        assert data["nonevent_logits"].shape == (n_windows, 11)
        assert data["non_target_max_logit"].shape == (n_windows,)
        assert data["no_birds_logit"].shape == (n_windows,)
        assert data["target_logits"].dtype == np.float32
        assert np.isfinite(data["target_logits"]).all()
        np.testing.assert_allclose(
            data["no_birds_logit"],
            no_birds_logit(data["target_logits"], data["nonevent_logits"]),
            atol=1e-5,
        )
        assert float(data["duration_s"]) == pytest.approx(duration, abs=1e-3)
    assert record_path(output, "Bubo_bubo/long.wav") == output / "files/Bubo_bubo/long.wav.npz"


def test_student_windows_get_the_teacher_window_with_the_nearest_centre(extracted):
    output, bird_dir, *_ = extracted
    store = SoftLabelStore(output)
    assert store.species == FOLDERS and store.hop == HOP and store.window == 3.0
    key = "Bubo_bubo/long.wav"  # 7 s, hop 3: teacher windows start at 0, 3 and 4 s
    starts, target, no_birds = store.windows(key)
    np.testing.assert_allclose(starts, [0.0, 3.0, 4.0])
    # (student offset, student clip length) -> teacher window (centres 1.5, 4.5, 5.5)
    for offset, clip, expected in [
        (0.0, 3.0, 0),
        (0.5, 1.0, 0),  # centre 1.0
        (1.4, 3.0, 0),  # centre 2.9: 1.4 from window 0, 1.6 from window 1
        (1.6, 3.0, 1),  # centre 3.1
        (3.0, 3.0, 1),
        (3.5, 3.0, 1),  # centre 5.0: a tie between 4.5 and 5.5 goes to the earlier window
        (3.6, 3.0, 2),
        (4.0, 3.0, 2),
        (5.0, 2.0, 2),  # centre 6.0, past the last teacher centre
    ]:
        assert store.window_index(key, offset, clip) == expected, (offset, clip)
        row = expected
        logits = store.teacher_logits_for(
            key, offset, clip, ["Apus_apus", "Certhia_familiaris", "Bubo_bubo", "no_birds"]
        )
        assert logits.shape == (4,) and logits.dtype == np.float32
        np.testing.assert_array_equal(
            logits, [target[row, 1], target[row, 2], target[row, 0], no_birds[row]]
        )
    # The config order gives the stored order, and other name forms work too.
    in_order = store.teacher_logits_for(key, 3.0, 3.0, [*FOLDERS, "no_birds"])
    np.testing.assert_array_equal(in_order, [*target[1], no_birds[1]])
    np.testing.assert_array_equal(
        store.teacher_logits_for(key, 3.0, 3.0, ["Bubo bubo", "no_birds"]),
        [target[1, 0], no_birds[1]],
    )
    # Absolute paths inside the dataset map to their key.
    assert store.has(bird_dir / key) and store.has(key)
    assert store.has("no_birds/train/noise1.wav")
    assert not store.has("Bubo_bubo/missing.wav")
    with pytest.raises(SoftLabelError, match="Poecile_montanus"):
        store.teacher_logits_for(key, 0.0, 3.0, ["Bubo_bubo", "Poecile_montanus", "no_birds"])
    with pytest.raises(SoftLabelError, match="missing.wav"):
        store.windows("Bubo_bubo/missing.wav")


def test_parallel_workers_give_the_same_labels(extracted, tmp_path):
    output, bird_dir, no_birds_dir, _ = extracted
    summary = extract_soft_labels(
        SPECIES, tmp_path / "parallel", bird_dir, no_birds_dir=no_birds_dir, hop=HOP, workers=2,
        progress=False,
    )
    assert summary.computed == 7 and len(summary.failed) == 2
    serial, parallel = SoftLabelStore(output), SoftLabelStore(tmp_path / "parallel")
    assert sorted(serial.files) == sorted(parallel.files)
    for key in serial.files:
        for a, b in zip(serial.windows(key), parallel.windows(key), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)


def _mtimes(output: Path) -> dict[str, int]:
    return {
        p.relative_to(output / "files").as_posix(): p.stat().st_mtime_ns
        for p in (output / "files").rglob("*.npz")
    }


class SimulatedKill(RuntimeError):
    pass


def test_resume_after_a_kill_recomputes_only_what_is_missing_or_changed(tmp_path, teacher):
    bird_dir = make_corpus(tmp_path, files_per_species=3, seconds=3.0)
    output = tmp_path / "labels"
    run = dict(species=SPECIES, output_path=output, bird_dir=bird_dir, hop=HOP, teacher=teacher,
               progress=False)
    written: list[str] = []

    def die_after_two(key: str) -> None:
        written.append(key)
        if len(written) == 2:
            raise SimulatedKill("killed")

    with pytest.raises(SimulatedKill):
        extract_soft_labels(**run, on_record=die_after_two)
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["status"] == "interrupted"
    assert sorted(metadata["files"]) == sorted(written)
    before = _mtimes(output)
    assert len(before) == 2
    # What a hard kill can leave behind: a temporary file, and (from a non-atomic writer) a
    # truncated record. Neither may be taken for a result.
    third = "Bubo_bubo/rec2.wav"
    assert third not in written
    record_path(output, third).write_bytes(b"PK\x03\x04truncated")
    (output / "files" / "Bubo_bubo" / ".rec0.wav.npz.123.abcd.part").write_bytes(b"partial")

    summary = extract_soft_labels(**run)
    assert (summary.computed, summary.reused) == (4, 2)
    after = _mtimes(output)
    assert len(after) == 6
    assert all(after[k] == before[k] for k in before)  # the done files were not recomputed
    assert not list((output / "files").rglob("*.part"))
    store = SoftLabelStore(output)
    assert len(store.files) == len(set(store.files)) == 6
    for key in store.files:
        starts, target, no_birds = store.windows(key)
        assert len(starts) == len(target) == len(no_birds) == 1

    # Unchanged inputs: nothing is computed and nothing is written, not even metadata.json.
    metadata_mtime = (output / "metadata.json").stat().st_mtime_ns
    started = time.perf_counter()
    summary = extract_soft_labels(**run)
    assert (summary.computed, summary.reused) == (0, 6)
    assert time.perf_counter() - started < 5.0
    assert _mtimes(output) == after
    assert (output / "metadata.json").stat().st_mtime_ns == metadata_mtime

    # A touched file (new mtime, same bytes: a copied or synced dataset) is not recomputed:
    # its content hash matches, and its record is restamped so the next check is cheap.
    touched = bird_dir / "Apus_apus" / "rec1.wav"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    old_record = read_record(output, "Apus_apus/rec1.wav")
    summary = extract_soft_labels(**run)
    assert (summary.computed, summary.reused) == (0, 6)
    changed = {k for k, v in _mtimes(output).items() if v != after[k]}
    assert changed == {"Apus_apus/rec1.wav.npz"}
    restamped = read_record(output, "Apus_apus/rec1.wav")
    assert int(restamped["source_mtime_ns"]) == touched.stat().st_mtime_ns
    for name in ("starts", "target_logits", "embedding", "source_sha256"):
        assert np.array_equal(restamped[name], old_record[name])
    after = _mtimes(output)
    assert extract_soft_labels(**run).reused == 6 and _mtimes(output) == after

    # New bytes of the same size under a new mtime are recomputed, and only that file.
    audio, sr = sf.read(touched, dtype="int16")
    sf.write(touched, (audio // 2).astype(np.int16), sr, subtype="PCM_16")
    assert touched.stat().st_size == stat.st_size
    summary = extract_soft_labels(**run)
    assert (summary.computed, summary.reused) == (1, 5)
    changed = {k for k, v in _mtimes(output).items() if v != after[k]}
    assert changed == {"Apus_apus/rec1.wav.npz"}


def test_changed_species_or_hop_is_refused_unless_recomputing(tmp_path, teacher):
    bird_dir = make_corpus(tmp_path, files_per_species=1, seconds=3.0)
    output = tmp_path / "labels"
    extract_soft_labels(SPECIES, output, bird_dir, hop=HOP, teacher=teacher, progress=False)
    with pytest.raises(ExtractionError, match="--output_path") as caught:
        extract_soft_labels(SPECIES, output, bird_dir, hop=1.5, teacher=teacher, progress=False)
    assert "hop" in str(caught.value)
    with pytest.raises(ExtractionError, match="species_labels"):
        extract_soft_labels(SPECIES[:2], output, bird_dir, hop=HOP, teacher=teacher,
                            progress=False)
    summary = extract_soft_labels(SPECIES[:2], output, bird_dir, hop=HOP, teacher=teacher,
                                  resume=False, progress=False)
    assert summary.computed == 2
    store = SoftLabelStore(output)
    assert store.species == FOLDERS[:2]
    assert store.windows("Bubo_bubo/rec0.wav")[1].shape == (1, 2)


def test_files_limit_and_location_filter(tmp_path, teacher):
    bird_dir = make_corpus(tmp_path, files_per_species=3, seconds=3.0)
    common = dict(species=SPECIES, bird_dir=bird_dir, hop=HOP, teacher=teacher, progress=False)
    summary = extract_soft_labels(output_path=tmp_path / "all", files_limit=2, **common)
    assert summary.computed == 2
    assert sorted(SoftLabelStore(tmp_path / "all").files) == [
        "Apus_apus/rec0.wav", "Bubo_bubo/rec0.wav",
    ]
    extract_soft_labels(output_path=tmp_path / "berlin", files_limit=2,
                        location=Location(52.5, 13.4, 20), **common)
    metadata = json.loads((tmp_path / "berlin" / "metadata.json").read_text())
    location = metadata["location_filter"]
    assert (location["lat"], location["lon"], location["week"]) == (52.5, 13.4, 20)
    assert location["n_plausible_species"] > 50
    labels = [entry["birdnet_label"] for entry in metadata["species"]]
    assert set(location["targets_not_plausible"]) <= set(labels)
    for key in ("Apus_apus/rec0.wav", "Bubo_bubo/rec0.wav"):
        everywhere, berlin = read_record(tmp_path / "all", key), read_record(
            tmp_path / "berlin", key)
        # Fewer candidate species can only lower the strongest other species' logit.
        assert np.all(berlin["non_target_max_logit"] <= everywhere["non_target_max_logit"])
        np.testing.assert_array_equal(berlin["target_logits"], everywhere["target_logits"])
    with pytest.raises(ExtractionError, match="week"):
        extract_soft_labels(output_path=tmp_path / "x", location=Location(52.5, 13.4, 49),
                            **common)


def test_repeated_or_unknown_species_are_errors(tmp_path, teacher):
    bird_dir = make_corpus(tmp_path, files_per_species=1, seconds=3.0)
    with pytest.raises(ExtractionError, match="list it once"):
        extract_soft_labels(["Bubo bubo", "Bubo_bubo"], tmp_path / "o", bird_dir,
                            teacher=teacher, progress=False)
    with pytest.raises(ValueError, match="Bubo bubo_Eurasian Eagle-Owl"):
        extract_soft_labels(["Bubo bubbo"], tmp_path / "o", bird_dir, teacher=teacher,
                            progress=False)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ExtractionError, match="No audio files"):
        extract_soft_labels(["Poecile montanus"], tmp_path / "o", bird_dir, teacher=teacher,
                            progress=False)
    with pytest.raises(ExtractionError, match="does not exist"):
        extract_soft_labels(["Bubo bubo"], tmp_path / "o", tmp_path / "nowhere",
                            teacher=teacher, progress=False)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "extract_soft_labels.py"), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )


def test_cli_help_and_unknown_species(tmp_path):
    done = _cli("--help")
    assert done.returncode == 0
    for option in ("--species_list", "--output_path", "--bird_dir", "--no_birds_dir", "--hop",
                   "--workers", "--files_limit", "--threads", "--no-resume", "--lat", "--week"):
        assert option in done.stdout
    species = tmp_path / "species.txt"
    species.write_text("# my species\nBubo bubo\n\nApus apuss   # typo\n")
    done = _cli("--species_list", str(species), "--bird_dir", str(tmp_path),
                "--output_path", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "Unknown species 'Apus apuss'" in done.stderr
    assert "Apus apus_Common Swift" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_run_killed_hard_then_resumed(tmp_path):
    """SIGKILL a real extraction mid-way: every record on disk is complete, and re-running
    finishes the job without recomputing them."""
    bird_dir = tmp_path / "birds"
    for i in range(40):
        write_wav(bird_dir / "Bubo_bubo" / f"r{i:02d}.wav", recording(3.0, 48000, 500, i), 48000)
    species = tmp_path / "species.txt"
    species.write_text("Bubo bubo\n")
    output = tmp_path / "labels"
    command = [sys.executable, str(REPO_ROOT / "extract_soft_labels.py"), "--species_list",
               str(species), "--bird_dir", str(bird_dir), "--output_path", str(output),
               "--hop", "3", "--no_progress"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_npz(output)) < 5:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    survivors = {p: p.stat().st_mtime_ns for p in _npz(output)}
    assert 5 <= len(survivors) < 40, "the run should have been killed part-way"
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(_npz(output)) == 40
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in survivors.items())
    store = SoftLabelStore(output)
    assert len(store.files) == 40
    for key in store.files:
        assert store.windows(key)[1].shape == (1, 1)


def _npz(output: Path) -> list[Path]:
    return list((output / "files").rglob("*.npz")) if (output / "files").is_dir() else []


def test_bench_extraction_reports_both_throughputs(tmp_path, capsys):
    from distillation.bench_extraction import main

    bird_dir = make_corpus(tmp_path, files_per_species=1, seconds=5.0)
    assert main(["--bird_dir", str(bird_dir), "--workers", "1", "--repeats", "1",
                 "--hop", "3"]) == 0
    out = capsys.readouterr().out
    header, row = out.strip().splitlines()[-2:]
    assert "raw win/s" in header and "raw CPU ms/win" in header
    values = [v for v in row.split() if v != "|"]
    assert values[:2] == ["1", "4"]  # one worker, 2 files x 2 windows
    raw, extraction, raw_cpu, extraction_cpu = map(float, (values[2], values[3], values[7],
                                                           values[8]))
    assert min(raw, extraction, raw_cpu, extraction_cpu) > 0

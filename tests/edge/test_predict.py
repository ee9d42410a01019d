"""predict.py on long recordings: planted calls are found, outputs and skipped files."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from datasets.audio_utils import load_audio
from edge.predict import PredictOptions, main, run_prediction
from edge.raven import RAVEN_COLUMNS
from tests.conftest import REPO_ROOT

# A tiny model trained for seconds on the synthetic corpus misses some quiet calls; the
# pipeline (windows, times, thresholds) is what is tested, so recall must be high, not 1.
MIN_RECALL = 0.8


def planted_recording(demo_corpus, checkpoint_path, out_path):
    """The validation and test recordings (never trained on) joined into one long file,
    written at 44.1 kHz stereo so reading, downmixing and resampling are exercised; returns
    the planted calls as (species, start_s, end_s) in the joined file's time."""
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    rows = [r for r in checkpoint["split_manifest"]
            if r["split"] in ("val", "test") and r["source"] == "bird"]
    annotations = pd.read_csv(demo_corpus.annotations_csv)
    pieces, calls, offset = [], [], 0.0
    for row in rows:
        audio, _ = load_audio(demo_corpus.bird_dir / row["path"], 44100)
        for call in annotations[annotations["path"] == row["path"]].itertuples():
            calls.append((call.species, offset + call.start_s, offset + call.end_s))
        pieces.append(audio)
        offset += len(audio) / 44100
    joined = np.concatenate(pieces)
    sf.write(out_path, np.stack([joined, 0.9 * joined], axis=1), 44100, subtype="PCM_16")
    return calls, offset


def test_planted_calls_are_found_in_a_long_recording(exported_dir, demo_checkpoint,
                                                     demo_corpus, tmp_path):
    calls, duration = planted_recording(demo_corpus, demo_checkpoint, tmp_path / "long.wav")
    assert duration > 60 and len(calls) >= 10
    out = tmp_path / "out"
    summary = run_prediction(exported_dir, tmp_path / "long.wav", out,
                             PredictOptions(hop_s=1.0, block_s=20.0))
    assert summary.files[0].duration_s == pytest.approx(duration, abs=0.01)
    detections = pd.read_csv(out / "detections.csv")
    assert list(detections.columns) == ["file", "start", "end", "species", "confidence"]
    assert (detections["end"] - detections["start"] <= 3.0 + 1e-6).all()
    assert "no_birds" not in set(detections["species"])

    # Found = a window of the right species overlapping the call, i.e. within one window.
    found = [
        ((detections["species"] == species) & (detections["start"] < end)
         & (detections["end"] > start)).any()
        for species, start, end in calls
    ]
    recall = float(np.mean(found))
    assert recall >= MIN_RECALL, f"recall {recall:.2f}: missed {np.array(calls)[~np.array(found)]}"

    with open(out / "long.selection.table.txt", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    assert list(table[0]) == list(RAVEN_COLUMNS)
    assert len(table) == len(detections)
    assert (out / "combined.selection.table.txt").is_file()


def test_bad_files_are_skipped_and_reported(exported_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(folder / "sub" / "good.flac", 0.1 * rng.standard_normal(32000 * 5), 32000)
    sf.write(folder / "good.wav", 0.1 * rng.standard_normal(48000 * 2), 48000)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "broken.mp3").write_bytes(b"ID3" + bytes(500))
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    code = main(["--model", str(exported_dir), "--input", str(folder), "--out", str(out),
                 "--threshold", "0.0", "--precision", "fp32"])
    assert code == 0
    skipped = pd.read_csv(out / "skipped_files.csv")
    assert sorted(skipped["path"].map(lambda p: p.rsplit("/", 1)[-1])) == [
        "broken.mp3", "empty.wav", "notes.txt"]
    assert (out / "sub" / "good.selection.table.txt").is_file()
    assert (out / "good.selection.table.txt").is_file()
    detections = pd.read_csv(out / "detections.csv")
    # threshold 0: every species in every window; the 2 s file has one padded window
    assert set(detections["file"]) == {"good.wav", "sub/good.flac"}
    assert len(detections[detections["file"] == "good.wav"]) == 4
    printed = capsys.readouterr().out
    assert "skipped 3 file(s)" in printed and "detections:" in printed


@pytest.mark.parametrize("what", ["model", "input"])
def test_missing_model_or_input_exits_2_without_traceback(exported_dir, tmp_path, capsys, what):
    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(32000 * 4), 32000)
    model = tmp_path / "missing_model" if what == "model" else exported_dir
    source = tmp_path / "missing.wav" if what == "input" else audio
    with pytest.raises(SystemExit) as info:
        main(["--model", str(model), "--input", str(source), "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert f"{what} not found" in capsys.readouterr().err


def test_checkpoint_and_entry_point(demo_checkpoint, tmp_path):
    """predict.py runs a .pt checkpoint too (PyTorch), through the top-level script."""
    audio = tmp_path / "clip.wav"
    sf.write(audio, 0.1 * np.random.default_rng(2).standard_normal(32000 * 7), 32000)
    result = subprocess.run(
        [sys.executable, "predict.py", "--model", str(demo_checkpoint), "--input", str(audio),
         "--out", str(tmp_path / "out"), "--hop", "2.0", "--class_thresholds", "Bubo_bubo=0.0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    detections = pd.read_csv(tmp_path / "out" / "detections.csv")
    # windows at 0, 2, 4 s: Bubo_bubo (threshold 0) reported in each
    assert (detections["species"] == "Bubo_bubo").sum() == 3
    assert "PyTorch" in result.stdout


def test_real_recording_streams(shared_bird_dir, exported_dir, tmp_path):
    """A real field recording (MP3 or WAV, any rate) is read whole, block by block."""
    path = max((p for p in shared_bird_dir.rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    summary = run_prediction(exported_dir, path, tmp_path / "out",
                             PredictOptions(block_s=10.0, threshold=1.0))
    assert not summary.skipped
    assert summary.files[0].duration_s > 10.0

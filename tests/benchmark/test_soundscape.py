"""Soundscape mode: segment scoring by hand, annotation inputs, and a run end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.soundscape_annotations import load_segments, target_sets
from benchmark.soundscape_scoring import detection_metrics, segment_scores, truth_matrix
from datasets.split_manifest import DatasetError
from tests.benchmark.test_benchmark import bench_config
from tests.conftest import write_wav

SPECIES = ["A_a", "B_b"]


def test_segment_scores_and_metrics_match_hand_computed_values():
    # Two recordings, 5 s segments; 3 s windows every 1.5 s on r1, one window on r2.
    segments = pd.DataFrame({
        "file": ["r1", "r1", "r1", "r2"],
        "start": [0.0, 5.0, 10.0, 0.0], "end": [5.0, 10.0, 15.0, 5.0],
        # r1 [5, 10]: only a bird the model does not know -> no target; r2: no bird.
        "species": [("A_a",), ("Other_bird",), ("B_b", "A_a"), ()],
    })
    windows = pd.DataFrame({
        "file": ["r1"] * 4 + ["r2"],
        "start": [0.0, 4.5, 9.0, 12.0, 1.0], "end": [3.0, 7.5, 12.0, 15.0, 4.0],
        "A_a": [0.9, 0.2, 0.6, 0.1, 0.7], "B_b": [0.1, 0.8, 0.3, 0.5, 0.1],
    })
    scores = segment_scores(segments, windows, SPECIES)
    # Segment [0,5] overlaps windows 0 and 1; [5,10] windows 1 and 2; [10,15] windows 2, 3.
    np.testing.assert_allclose(scores, [[0.9, 0.8], [0.6, 0.8], [0.6, 0.5], [0.7, 0.1]])
    # More than 1 s of overlap: window 1 leaves [0,5] (0.5 s), window 2 [5,10] (exactly 1 s).
    strict = segment_scores(segments, windows, SPECIES, min_overlap_s=1.0)
    np.testing.assert_allclose(strict, [[0.9, 0.1], [0.2, 0.8], [0.6, 0.5], [0.7, 0.1]])

    targets = target_sets(segments, SPECIES)
    assert targets == [("A_a",), (), ("B_b", "A_a"), ()]  # annotation order kept
    truth = truth_matrix(targets, SPECIES)
    durations = np.full(4, 5.0)
    m = detection_metrics(truth, scores, np.array([0.65, 0.5]), durations, SPECIES)
    a, b = m["per_species"]["A_a"], m["per_species"]["B_b"]
    # A: detected on segments 0 and 3 (0.9, 0.7); truth on 0 and 2.
    assert (a["true_positives"], a["false_positives"], a["false_negatives"]) == (1, 1, 1)
    assert a["precision"] == pytest.approx(0.5) and a["recall"] == pytest.approx(0.5)
    # No-target segments: 1 and 3, 10 s = 1/360 h. A fires on 3, B (0.8) on 1.
    assert m["no_target_segments"] == 2
    assert a["false_detections_per_hour"] == pytest.approx(360.0)
    assert b["false_detections_per_hour"] == pytest.approx(360.0)
    assert m["false_detections_per_hour"] == pytest.approx(720.0)
    # AP of A: ranking 0.9 (pos), 0.7 (neg), 0.6 (pos), 0.6 (neg) -> (1 + 2/4) / 2 with the tie.
    assert a["average_precision"] == pytest.approx(0.75)
    assert b["positives"] == 1 and b["roc_auc"] == pytest.approx(1 / 3)
    assert m["macro_average_precision"] == pytest.approx((0.75 + b["average_precision"]) / 2)


def _raven_table(path, rows, begin_path=None):
    header = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
              "Low Freq (Hz)", "High Freq (Hz)", "Common Name", "Species Code", "Confidence"]
    if begin_path:
        header += ["Begin Path", "File Offset (s)"]
    lines = ["\t".join(header)]
    for i, (begin, end, common, code) in enumerate(rows, 1):
        row = [str(i), "Spectrogram 1", "1", str(begin), str(end), "0", "12000", common, code,
               "1.0"]
        if begin_path:
            row += [begin_path, str(begin)]
        lines.append("\t".join(row))
    path.write_text("\n".join(lines) + "\n")


def test_raven_tables_and_csv_become_segments(tmp_path):
    audio = tmp_path / "audio"
    write_wav(audio / "site1.wav", np.zeros(12 * 8000, np.float32), 8000)
    write_wav(audio / "site2.flac", np.zeros(7 * 8000, np.float32), 8000)
    tables = tmp_path / "tables"
    tables.mkdir()
    # Table named after its recording; a Genus_species code and a common name we map.
    _raven_table(tables / "site1.BirdNET.selection.table.txt",
                 [(1.0, 2.0, "x", "A_a"), (4.5, 6.0, "Bee Bird", "bebir")])
    # Begin Path from another machine: only its file name counts.
    _raven_table(tables / "anything.txt", [(6.5, 6.9, "Unknown", "Zz zz")],
                 begin_path=r"C:\field\site2.flac")
    # A combined table naming two recordings: each gets its own selections.
    write_wav(audio / "site3.wav", np.zeros(5 * 8000, np.float32), 8000)
    write_wav(audio / "site4.wav", np.zeros(5 * 8000, np.float32), 8000)
    (tables / "combined.txt").write_text(
        "Begin Time (s)\tEnd Time (s)\tSpecies Code\tBegin Path\tFile Offset (s)\n"
        "1.0\t2.0\tA_a\t/x/site3.wav\t1.0\n6.0\t7.0\tB_b\t/x/site4.wav\t1.0\n")
    (tables / "broken.txt").write_text("Selection\tBegin Time (s)\n1\tsoon\n")
    skipped = []
    segments = load_segments(tables, audio, 5.0, {"Bee Bird": "B_b"}, skipped)
    assert [s.path.rsplit("/", 1)[-1] for s in skipped] == ["broken.txt"]
    by_file = {f.rsplit("/", 1)[-1]: g for f, g in segments.groupby("file")}
    s1 = by_file["site1.wav"]
    assert s1["start"].tolist() == [0.0, 5.0, 10.0] and s1["end"].tolist() == [5.0, 10.0, 12.0]
    assert s1["species"].tolist() == [("A_a", "B_b"), ("B_b",), ()]
    assert by_file["site2.flac"]["species"].tolist() == [(), ("Zz_zz",)]
    assert by_file["site3.wav"]["species"].tolist() == [("A_a",)]
    assert by_file["site4.wav"]["species"].tolist() == [("B_b",)]

    labels = tmp_path / "labels.csv"
    labels.write_text("file,start,end,species\nsite1.wav,0,5,A_a B_b\nsite1.wav,5,10,\n"
                      "missing.wav,0,5,A_a\n")
    skipped = []
    segments = load_segments(labels, audio, 5.0, None, skipped)
    assert segments["species"].tolist() == [("A_a", "B_b"), ()]
    assert [s.reason for s in skipped] == ["annotated recording not found"]
    labels.write_text("file,start,end,species\n../outside.wav,0,5,A_a\n")
    with pytest.raises(DatasetError, match="outside the audio folder"):
        load_segments(labels, audio, 5.0, None, [])


def test_soundscape_end_to_end_on_planted_calls(demo_checkpoint, tmp_path):
    from benchmark.soundscape import run_soundscape
    from demo.corpus import write_long_recording

    audio = tmp_path / "field"
    write_long_recording(audio / "site.wav", minutes=0.5)
    calls = pd.read_csv(audio / "site.annotations.csv")
    rows = []
    for start in range(0, 30, 5):
        present = calls[(calls["start_s"] < start + 5) & (calls["end_s"] > start)]
        rows.append(("site.wav", start, start + 5, " ".join(sorted(set(present["species"])))))
    pd.DataFrame(rows, columns=["file", "start", "end", "species"]).to_csv(
        audio / "labels.csv", index=False)
    out = tmp_path / "results"
    cfg = bench_config([
        f"benchmark.paths.student_model={demo_checkpoint}",
        f"benchmark.paths.annotations={audio / 'labels.csv'}",
        f"benchmark.paths.output_dir={out}", "birdnet.hop_s=3.0",
        "comparison.bootstrap_samples=50",
    ], name="soundscape")
    summary = run_soundscape(cfg)
    for name in ["soundscape_report.txt", "soundscape_report.json", "soundscape_segments.csv",
                 "pr_curves.png", "timeline.png", "skipped_files.csv",
                 ]:
        assert (out / name).is_file(), name
    assert len(list((out / "predictions").glob("validation_scores.*.csv"))) == 1
    report = json.loads((out / "soundscape_report.json").read_text())
    assert report["segments"] == 6 and report["recordings"] == 1
    species = report["species"]
    segments = pd.read_csv(out / "soundscape_segments.csv", keep_default_na=False)
    assert [f"student_{s}" for s in species] + [f"birdnet_{s}" for s in species] == \
        [c for c in segments.columns if c.startswith(("student_", "birdnet_"))]
    for model in ("student", "birdnet"):
        per = report[model]["per_species"]
        assert set(per) == set(species)
        assert report[model]["thresholds"]["source"] == "validation split"
        for values in per.values():
            assert 0.0 < values["threshold"] < 1.0
    planted = set(calls[calls["end_s"] <= 30]["species"])
    for name in planted:
        assert report["student"]["per_species"][name]["positives"] > 0
        assert report["student"]["per_species"][name]["average_precision"] is not None
    assert summary["student"]["macro_average_precision"] == \
        report["student"]["macro_average_precision"]

    # A second run reuses every cached window score; fixed thresholds need no calibration.
    caches = sorted((out / "predictions" / "windows").rglob("*.csv"))
    assert len(caches) == 2
    before = [p.stat().st_mtime_ns for p in caches]
    run_soundscape(bench_config([
        f"benchmark.paths.student_model={demo_checkpoint}",
        f"benchmark.paths.annotations={audio / 'labels.csv'}",
        f"benchmark.paths.output_dir={out}", "birdnet.hop_s=3.0",
        "comparison.bootstrap_samples=20", "soundscape.thresholds.fixed=0.5",
        "comparison.save_plots=false",
    ], name="soundscape"))
    assert [p.stat().st_mtime_ns for p in caches] == before
    report = json.loads((out / "soundscape_report.json").read_text())
    assert report["birdnet"]["per_species"][species[0]]["threshold"] == 0.5

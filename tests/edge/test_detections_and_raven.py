"""Thresholds, detections and the Raven selection table layout."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge.detections import (
    Detection,
    merge_consecutive,
    parse_class_thresholds,
    threshold_vector,
    window_detections,
)
from edge.errors import EdgeError
from edge.raven import (
    RAVEN_COLUMNS,
    FileDetections,
    write_combined_table,
    write_selection_table,
)

SPECIES = ["Bubo_bubo", "Apus_apus"]


def test_class_thresholds_from_pairs_json_and_csv(tmp_path):
    assert parse_class_thresholds("Bubo_bubo=0.3, Apus_apus=0.7", SPECIES) == {
        "Bubo_bubo": 0.3, "Apus_apus": 0.7}
    (tmp_path / "t.json").write_text(json.dumps({"Apus_apus": 0.2}))
    assert parse_class_thresholds(str(tmp_path / "t.json"), SPECIES) == {"Apus_apus": 0.2}
    (tmp_path / "t.csv").write_text("species,threshold\nBubo_bubo,0.9\n")
    assert parse_class_thresholds(str(tmp_path / "t.csv"), SPECIES) == {"Bubo_bubo": 0.9}
    assert parse_class_thresholds(None, SPECIES) == {}


@pytest.mark.parametrize("spec", ["Strix_aluco=0.3", "Bubo_bubo=1.5", "Bubo_bubo", "x.json"])
def test_bad_class_thresholds_are_user_errors(spec):
    with pytest.raises(EdgeError):
        parse_class_thresholds(spec, SPECIES)


def test_threshold_precedence():
    defaults = {"Bubo_bubo": 0.5, "Apus_apus": 0.5}
    np.testing.assert_allclose(threshold_vector(SPECIES, defaults, None, {}), [0.5, 0.5])
    np.testing.assert_allclose(threshold_vector(SPECIES, defaults, 0.8, {}), [0.8, 0.8])
    np.testing.assert_allclose(
        threshold_vector(SPECIES, defaults, 0.8, {"Apus_apus": 0.1}), [0.8, 0.1])


def test_window_detections_never_report_no_birds():
    probs = np.array([[0.7, 0.1, 0.2], [0.05, 0.05, 0.9], [0.45, 0.5, 0.05]], dtype=np.float32)
    found = window_detections("a.wav", [0, 1, 2], [3, 4, 5], probs, SPECIES,
                              np.array([0.5, 0.4], dtype=np.float32))
    assert [(d.start, d.species) for d in found] == [(0, "Bubo_bubo"), (2, "Apus_apus")]
    assert found[0].confidence == pytest.approx(0.7)


def test_merge_joins_overlapping_windows_of_one_species():
    dets = [Detection("a", s, s + 3, "Bubo_bubo", c) for s, c in [(0, 0.6), (1, 0.9), (2, 0.7)]]
    dets += [Detection("a", 10, 13, "Bubo_bubo", 0.8), Detection("a", 1, 4, "Apus_apus", 0.6)]
    merged = merge_consecutive(dets)
    assert [(d.start, d.end, d.species, d.confidence) for d in merged] == [
        (0, 5, "Bubo_bubo", 0.9), (1, 4, "Apus_apus", 0.6), (10, 13, "Bubo_bubo", 0.8)]


def _read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_raven_tables_follow_birdnet_analyzer_layout(tmp_path):
    first = FileDetections("/data/a.wav", 10.0, [
        Detection("a.wav", 0.0, 3.0, "Bubo_bubo", 0.91234),
        Detection("a.wav", 6.0, 9.0, "Apus_apus", 0.6),
    ], 50.0, 11025.0)
    second = FileDetections("/data/b.wav", 5.0, [
        Detection("b.wav", 2.0, 5.0, "Apus_apus", 0.7)], 50.0, 8000.0)
    names = {"Bubo_bubo": "Eurasian Eagle-Owl"}
    write_selection_table(tmp_path / "a.selection.table.txt", first, names)
    header = (tmp_path / "a.selection.table.txt").read_text().splitlines()[0]
    assert header.split("\t") == list(RAVEN_COLUMNS)
    assert list(RAVEN_COLUMNS) == [
        "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
        "High Freq (Hz)", "Common Name", "Species Code", "Confidence", "Begin Path",
        "File Offset (s)"]
    rows = _read(tmp_path / "a.selection.table.txt")
    assert rows[0] == {
        "Selection": "1", "View": "Spectrogram 1", "Channel": "1", "Begin Time (s)": "0.000",
        "End Time (s)": "3.000", "Low Freq (Hz)": "50.0", "High Freq (Hz)": "11025.0",
        "Common Name": "Eurasian Eagle-Owl", "Species Code": "Bubo_bubo",
        "Confidence": "0.9123", "Begin Path": "/data/a.wav", "File Offset (s)": "0.000"}
    assert rows[1]["Common Name"] == "Apus apus"  # no common name known: scientific name

    write_combined_table(tmp_path / "combined.txt", [first, second])
    combined = _read(tmp_path / "combined.txt")
    assert [r["Selection"] for r in combined] == ["1", "2", "3"]
    # The second file starts where the first one (10 s) ended; File Offset stays in-file.
    assert (combined[2]["Begin Time (s)"], combined[2]["End Time (s)"]) == ("12.000", "15.000")
    assert combined[2]["File Offset (s)"] == "2.000"
    assert combined[2]["Begin Path"] == "/data/b.wav"


def test_empty_table_has_only_the_header(tmp_path):
    write_selection_table(tmp_path / "e.txt", FileDetections("/x.wav", 4.0, [], 0.0, 16000.0))
    assert (tmp_path / "e.txt").read_text() == "\t".join(RAVEN_COLUMNS) + "\n"

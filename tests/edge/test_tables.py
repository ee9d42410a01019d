"""predict.py --formats: Audacity labels and the Kaleidoscope CSV, parsed back."""

from __future__ import annotations

import pandas as pd
import pytest

from edge.detections import Detection
from edge.errors import EdgeError
from edge.predict import PredictOptions, run_prediction
from edge.raven import FileDetections
from edge.tables import (
    DEFAULT_FORMATS,
    KALEIDOSCOPE_COLUMNS,
    audacity_name,
    format_audacity,
    kaleidoscope_rows,
    parse_audacity,
    parse_formats,
)


def test_formats_option():
    assert parse_formats(None) == DEFAULT_FORMATS == ("csv", "raven")
    assert parse_formats("kaleidoscope, Audacity") == ("csv", "audacity", "kaleidoscope")
    with pytest.raises(EdgeError, match="unknown excel"):
        parse_formats("raven,excel")


def test_audacity_and_kaleidoscope_rows_round_trip():
    detections = [Detection("sub/a.wav", 1.0, 4.0, "Bubo_bubo", 0.91234),
                  Detection("sub/a.wav", 2.0, 5.0, "Apus_apus", 0.5)]
    item = FileDetections("/data/in/sub/a.wav", 10.0, detections, 0.0, 11025.0)
    assert parse_audacity(format_audacity(item)) == [(1.0, 4.0, "Bubo_bubo", 0.9123),
                                                     (2.0, 5.0, "Apus_apus", 0.5)]
    rows = kaleidoscope_rows("/data/in", [item], {"Bubo_bubo": "Eurasian Eagle-Owl"})
    assert rows[0] == ["/data/in", "sub", "a.wav", "1.000", "3.000", "Bubo bubo",
                       "Eurasian Eagle-Owl", "0.9123"]
    assert audacity_name("sub/a.selection.table.txt").as_posix() == "sub/a.labels.txt"


def test_predict_writes_every_format_and_they_parse_back(exported_dir, demo_corpus, tmp_path):
    files = sorted(demo_corpus.bird_dir.glob("*/*.wav"))[:2]
    folder = tmp_path / "in"
    for path in files:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    run_prediction(exported_dir, folder, out,
                   PredictOptions(threshold=0.2, formats="raven,audacity,kaleidoscope"))
    detections = pd.read_csv(out / "detections.csv")
    assert len(detections) > 0
    labels = []
    for path in sorted(folder.rglob("*.wav")):
        rel = path.relative_to(folder)
        parsed = parse_audacity((out / rel.parent / f"{path.stem}.labels.txt").read_text())
        labels += [(rel.as_posix(), *row) for row in parsed]
        assert (out / rel.parent / f"{path.stem}.selection.table.txt").is_file()
    expected = [tuple(r) for r in detections[["file", "start", "end", "species", "confidence"]]
                .itertuples(index=False)]
    assert len(labels) == len(expected)
    for got, want in zip(sorted(labels), sorted(expected), strict=True):
        assert (got[0], got[3]) == (want[0], want[3])
        assert (got[1], got[2], got[4]) == pytest.approx((want[1], want[2], want[4]), abs=1e-3)
    kaleidoscope = pd.read_csv(out / "kaleidoscope.csv", keep_default_na=False)
    assert tuple(kaleidoscope.columns) == KALEIDOSCOPE_COLUMNS
    assert set(kaleidoscope["INDIR"]) == {str(folder.resolve())}
    rebuilt = (kaleidoscope["FOLDER"] + "/" + kaleidoscope["IN FILE"]).tolist()
    assert rebuilt == detections["file"].tolist()
    assert kaleidoscope["OFFSET"].tolist() == pytest.approx(detections["start"].tolist())
    assert (kaleidoscope["scientific_name"].str.replace(" ", "_") == detections["species"]).all()

    only = tmp_path / "only_audacity"
    run_prediction(exported_dir, folder, only, PredictOptions(threshold=0.2, formats="audacity"))
    assert not list(only.rglob("*.selection.table.txt"))
    assert len(list(only.rglob("*.labels.txt"))) == 2 and (only / "detections.csv").is_file()

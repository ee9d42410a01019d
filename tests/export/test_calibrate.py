"""Per-species thresholds: the rule on a case with a known answer, and the calibrated export
that predict.py then uses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from edge.errors import EdgeError
from edge.predict import PredictOptions, run_prediction
from edge.runtime import OnnxClassifier
from edge.sidecar import read_sidecar
from export.calibrate import calibrate_export, calibrate_thresholds, choose_threshold, main

POSITIVE = [0.9, 0.8, 0.6]
NEGATIVE = [0.7, 0.2, 0.1]


def _case():
    return np.array(POSITIVE + NEGATIVE), np.array([True] * 3 + [False] * 3)


def test_best_f1_threshold_has_the_known_answer():
    scores, positive = _case()
    # Cuts 0.9 / 0.8 / 0.6 give F1 0.5 / 0.8 / 0.857: keep >= 0.6, then halfway to 0.2.
    choice = choose_threshold(scores, positive, "best_f1")
    assert choice.threshold == pytest.approx(0.4)
    assert (choice.precision, choice.recall) == (pytest.approx(0.75), pytest.approx(1.0))
    assert choice.positives == 3 and choice.negatives == 3


def test_precision_rule_takes_the_lowest_cut_reaching_the_target():
    scores, positive = _case()
    # Precision 1 down to the cut 0.8 (recall 2/3); halfway to the negative at 0.7.
    choice = choose_threshold(scores, positive, "precision", target_precision=0.9)
    assert choice.threshold == pytest.approx(0.75) and choice.met_target
    assert choice.recall == pytest.approx(2 / 3)
    # Unreachable: the only positive scores below a negative -> best F1, flagged.
    missed = choose_threshold([0.5, 0.9], [True, False], "precision", target_precision=0.9)
    assert not missed.met_target and missed.threshold == pytest.approx(0.5)
    with pytest.raises(EdgeError, match="rule"):
        choose_threshold(scores, positive, "recall")


def test_species_without_validation_windows_are_left_out():
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.1, 0.7]])
    choices = calibrate_thresholds(probabilities, np.array([0, 2]), ["A_a", "B_b"])
    assert set(choices) == {"A_a"} and choices["A_a"].threshold == pytest.approx(0.55)


def test_calibrated_export_is_used_by_predict(exported_dir, demo_checkpoint, demo_corpus,
                                               tmp_path, capsys):
    exported = tmp_path / "exported"
    shutil.copytree(exported_dir, exported)  # the session's export stays at 0.5
    assert main(["--checkpoint", str(demo_checkpoint), "--exported", str(exported)]) == 0
    assert "thresholds written" in capsys.readouterr().out
    info = read_sidecar(exported)
    calibration = info.threshold_calibration
    assert calibration["rule"] == "best_f1" and calibration["split"] == "val"
    assert set(calibration["per_species"]) <= set(info.species)
    assert any(abs(v - 0.5) > 1e-6 for v in info.thresholds.values())
    # A lone .onnx carries the same thresholds in its metadata.
    lone = OnnxClassifier(exported / info.files["int8"])
    assert lone.info.thresholds == info.thresholds

    recording = sorted(demo_corpus.bird_dir.glob("*/*.wav"))[0]
    out = tmp_path / "out"
    run_prediction(exported, recording, out, PredictOptions())
    detections = pd.read_csv(out / "detections.csv")
    for row in detections.itertuples():
        assert row.confidence >= info.thresholds[row.species] - 1e-4
    # --threshold overrides the calibrated values for every species.
    run_prediction(exported, recording, tmp_path / "all", PredictOptions(threshold=0.0))
    assert len(pd.read_csv(tmp_path / "all" / "detections.csv")) >= len(detections)
    json.loads((exported / "model.json").read_text())  # still valid JSON


def test_calibrating_the_wrong_checkpoint_is_refused(exported_dir, demo_corpus, tmp_path):
    import torch

    checkpoint = torch.load(read_sidecar(exported_dir).source["checkpoint"], weights_only=True)
    checkpoint["class_names"] = ["X_x", "no_birds"]
    other = tmp_path / "other.pt"
    torch.save(checkpoint, other)
    exported = tmp_path / "exported"
    shutil.copytree(exported_dir, exported)
    with pytest.raises(EdgeError):
        calibrate_export(other, exported)


def test_a_checkpoint_trained_without_validation_says_so(exported_dir, tmp_path):
    import torch

    checkpoint = torch.load(read_sidecar(exported_dir).source["checkpoint"], weights_only=True)
    # As trained with dataset.split_ratios=[0.85,0,0.15] training.monitor=last.
    checkpoint["split_manifest"] = [{**row, "split": "train" if row["split"] == "val"
                                     else row["split"]} for row in checkpoint["split_manifest"]]
    no_validation = tmp_path / "no_validation.pt"
    torch.save(checkpoint, no_validation)
    exported = tmp_path / "exported"
    shutil.copytree(exported_dir, exported)
    with pytest.raises(EdgeError, match="trained without a val split"):
        calibrate_export(no_validation, exported)

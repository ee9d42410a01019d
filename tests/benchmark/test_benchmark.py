import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from benchmark.metrics import agreement, bootstrap_macro_f1_difference, model_metrics
from benchmark.paths import BENCHMARK_DIR, register_resolvers
from benchmark.pipeline import run_benchmark
from benchmark.scoring import decide
from tests.conftest import REPO_ROOT

CLASSES = ["A_a", "B_b", "no_birds"]


def bench_config(overrides, name="quick_start"):
    register_resolvers()
    with initialize_config_dir(str(BENCHMARK_DIR / "config"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def fixed_table(labels, predicted):
    table = pd.DataFrame({"file": [f"f{i}" for i in range(len(labels))], "label": labels,
                          "predicted": predicted, "confidence": 0.9})
    for name in CLASSES:
        table[f"prob_{name}"] = [0.8 if p == name else 0.1 for p in predicted]
    return table


def test_metrics_match_hand_computed_values():
    labels = ["A_a", "A_a", "B_b", "B_b", "no_birds", "no_birds"]
    student = fixed_table(labels, ["A_a", "B_b", "B_b", "B_b", "no_birds", "A_a"])
    metrics = model_metrics(student, CLASSES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # A: P=1/2, R=1/2, F1=1/2; B: P=2/3, R=1, F1=0.8; no_birds: P=1, R=1/2, F1=2/3.
    assert metrics["per_class"]["B_b"]["f1"] == pytest.approx(0.8)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert metrics["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    birdnet = fixed_table(labels, ["A_a", "A_a", "A_a", "B_b", "A_a", "A_a"])
    categories = agreement(student, birdnet).tolist()
    assert categories == ["both_correct", "only_birdnet", "only_student", "both_correct",
                          "only_student", "both_wrong"]
    interval = bootstrap_macro_f1_difference(student, birdnet, CLASSES, 200, seed=0)
    assert interval["ci95_low"] <= interval["difference"] <= interval["ci95_high"]


def test_decision_rule_uses_threshold_and_no_birds_signal():
    scores = np.array([[0.9, 0.05], [0.05, 0.08], [0.4, 0.3]])
    predicted, confidence, probs = decide(scores, threshold=0.1)
    assert predicted.tolist() == [0, 2, 2]  # 0.4 < 1 - 0.4: no_birds wins on the last
    assert probs.shape == (3, 3) and confidence[0] == pytest.approx(0.9)
    predicted, _, _ = decide(scores, 0.1, no_birds_scores=np.array([0.1, 0.9, 0.2]))
    assert predicted.tolist() == [0, 2, 0]


def test_end_to_end_on_demo_corpus_reuses_stages(demo_checkpoint, tmp_path):
    out = tmp_path / "results"
    cfg = bench_config([f"benchmark.paths.student_model={demo_checkpoint}",
                        f"benchmark.paths.output_dir={out}", "birdnet.hop_s=3.0",
                        "student_model.inference.hop_s=3.0", "efficiency.windows=3",
                        "comparison.bootstrap_samples=100"])
    summary = run_benchmark(cfg)
    for name in ["predictions/ground_truth.csv", "predictions/student_predictions.csv",
                 "predictions/birdnet_predictions.csv", "comparison/comparison_report.txt",
                 "comparison/comparison_report.json", "comparison/detailed_cases.csv",
                 "comparison/confusion_matrices.png", "comparison/agreement_analysis.png",
                 "comparison/per_class_accuracy.png", "comparison/confidence_distributions.png",
                 "comparison/metrics_comparison_table.csv",
                 "comparison/per_class_metrics_table.csv", "skipped_files.csv"]:
        assert (out / name).is_file(), name
    truth = pd.read_csv(out / "predictions" / "ground_truth.csv")
    assert set(truth["split"]) == {"test"}  # never training audio
    report = json.loads((out / "comparison" / "comparison_report.json").read_text())
    assert report["files"] == len(truth)
    assert report["efficiency"]["ms_per_window"]["student"] > 0
    assert summary["student"]["macro_f1"] == report["student"]["macro_f1"]
    before = (out / "predictions" / "birdnet_predictions.csv").stat().st_mtime_ns
    run_benchmark(cfg)
    assert (out / "predictions" / "birdnet_predictions.csv").stat().st_mtime_ns == before


def test_held_out_folder_with_limit_and_bad_files(demo_checkpoint, demo_corpus, tmp_path):
    held_out = tmp_path / "held_out"
    for species in ("Bubo_bubo", "Apus_apus"):
        (held_out / species).mkdir(parents=True)
        source = sorted((demo_corpus.bird_dir / species).glob("*.wav"))[0]
        (held_out / species / source.name).write_bytes(source.read_bytes())
    (held_out / "Bubo_bubo" / "broken.wav").write_bytes(b"RIFF-not-really")
    (held_out / "Unknown_species").mkdir()
    out = tmp_path / "results"
    cfg = bench_config([
        f"benchmark.paths.student_model={demo_checkpoint}", f"benchmark.paths.output_dir={out}",
        "benchmark.mode.use_test_set_only=false", f"benchmark.paths.audio_dir={held_out}",
        f"benchmark.paths.no_birds_dir={tmp_path / 'none'}", "debug.files_limit=2",
        "birdnet.hop_s=3.0", "efficiency.enabled=false", "comparison.save_plots=false",
        "comparison.bootstrap_samples=50",
    ])
    run_benchmark(cfg)
    truth = pd.read_csv(out / "predictions" / "ground_truth.csv")
    assert len(truth) == 2 and set(truth["label"]) == {"Bubo_bubo", "Apus_apus"}
    assert not (out / "comparison" / "confusion_matrices.png").exists()
    cfg_all = bench_config([
        f"benchmark.paths.student_model={demo_checkpoint}", f"benchmark.paths.output_dir={out}",
        "benchmark.mode.use_test_set_only=false", f"benchmark.paths.audio_dir={held_out}",
        f"benchmark.paths.no_birds_dir={tmp_path / 'none'}", "birdnet.hop_s=3.0",
        "efficiency.enabled=false", "comparison.save_plots=false",
        "comparison.bootstrap_samples=50", "debug.dev_mode=false",
    ], name="benchmark")
    run_benchmark(cfg_all)
    skipped = pd.read_csv(out / "skipped_files.csv")
    reasons = dict(zip(skipped["path"].str.split("/").str[-1], skipped["reason"], strict=False))
    assert "cannot decode" in reasons["broken.wav"]
    assert "not in the model's classes" in reasons["Unknown_species"]


def test_cli_missing_model_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "run_benchmark.py", "--config-name=quick_start",
         f"benchmark.paths.student_model={tmp_path / 'nope.pt'}",
         f"benchmark.paths.output_dir={tmp_path / 'out'}"],
        cwd=BENCHMARK_DIR, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "not found" in result.stderr
    from_root = subprocess.run(
        [sys.executable, "benchmark/run_benchmark.py", "--cfg", "job"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert from_root.returncode == 0 and "student_model" in from_root.stdout

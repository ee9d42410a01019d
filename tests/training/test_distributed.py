"""torchrun with two CPU processes (gloo) against the single-process run of the same epoch."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT

TORCHRUN = Path(sys.executable).parent / "torchrun"


def _overrides(demo_corpus, tmp: Path) -> list[str]:
    return [
        f"dataset.bird_data_dir={demo_corpus.bird_dir}",
        f"dataset.esc50_dir={demo_corpus.esc50_dir}",
        f"dataset.cache_dir={tmp / 'cache'}", "dataset.num_workers=0", "training.epochs=1",
        "training.batch_size=16", f"training.save_path={tmp / 'best.pt'}",
        f"paths.log_dir={tmp / 'logs'}", "dataset.augmentation.enabled=false",
    ]


def _run(cmd: list[str], tmp: Path) -> dict:
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp / "logs" / "bird_classification").glob("*/results.json"))
    assert len(runs) == 1, runs
    return json.loads(runs[0].read_text())


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is installed with torch")
def test_two_process_epoch_matches_single_process(demo_corpus, tmp_path):
    single = _run([sys.executable, "train.py", *_overrides(demo_corpus, tmp_path / "one")],
                  tmp_path / "one")
    double = _run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "train.py",
                   *_overrides(demo_corpus, tmp_path / "two")], tmp_path / "two")
    # Every validation and test window is scored exactly once across the two ranks.
    assert double["val"]["n_examples"] == single["val"]["n_examples"]
    assert double["test"]["n_examples"] == single["test"]["n_examples"]
    assert double["windows_per_class"] == single["windows_per_class"]
    # Same global batch and initial weights: one epoch ends close to the single-process run.
    one = pd.read_csv(next((tmp_path / "one" / "logs").rglob("metrics.csv"))).iloc[0]
    two = pd.read_csv(next((tmp_path / "two" / "logs").rglob("metrics.csv"))).iloc[0]
    assert abs(one["val_loss"] - two["val_loss"]) < 0.1
    assert abs(one["train_loss"] - two["train_loss"]) < 0.1
    # Only rank 0 wrote: one run folder with one checkpoint.
    assert len(list((tmp_path / "two" / "logs").rglob("best_model.pt"))) == 1

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from common.errors import ConfigError
from datasets.split_manifest import DatasetError
from model_checkpoint import CheckpointError, check_class_names, load_checkpoint
from tests.conftest import REPO_ROOT
from tests.training.helpers import compose_config, fast_overrides
from training.run import run_training

EXPECTED_OUTPUTS = [
    "best_model.pt",
    "results.json",
    "metrics.csv",
    "confusion_matrix.png",
    "training_history.png",
    "split_manifest.csv",
    "skipped_files.csv",
    "last_state.pt",
]


def test_short_run_writes_every_output(demo_corpus, tmp_path):
    cfg = compose_config(fast_overrides(demo_corpus.bird_dir, tmp_path))
    run_dir = tmp_path / "run"
    results = run_training(cfg, run_dir)
    for name in EXPECTED_OUTPUTS:
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["class_names"][-1] == "no_birds"
    assert 0.0 <= saved["macro_f1"] <= 1.0 and saved["parameters"] > 0 and saved["macs"] > 0
    assert set(saved["test"]["per_class"]) == set(saved["class_names"])
    assert saved["throughput_windows_per_s"] > 0
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 2
    assert results["macro_f1"] == saved["macro_f1"]

    # The checkpoint is self-contained and loads without pickled code.
    raw = torch.load(run_dir / "best_model.pt", weights_only=True)
    assert raw["class_names"] == list(cfg.dataset.allowed_bird_classes) + ["no_birds"]
    assert raw["audio"] == {"sample_rate": 32000, "clip_duration": 3.0}
    assert {r["split"] for r in raw["split_manifest"]} == {"train", "val", "test"}
    assert raw["config"]["training"]["epochs"] == 2
    model, _ = load_checkpoint(tmp_path / "best_copy.pt")
    with torch.no_grad():
        assert model(torch.zeros(1, 96000)).shape == (1, 5)


def test_same_seed_gives_same_split_and_metrics(demo_corpus, tmp_path):
    overrides = fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=1)
    first = run_training(compose_config(overrides), tmp_path / "a")
    second = run_training(compose_config(overrides), tmp_path / "b")
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "split_manifest.csv"),
        pd.read_csv(tmp_path / "b" / "split_manifest.csv"),
    )
    assert first["test"]["confusion_matrix"] == second["test"]["confusion_matrix"]


def test_resume_continues_an_interrupted_run(demo_corpus, tmp_path):
    overrides = fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=2)
    run_dir = tmp_path / "logs" / "bird_classification" / "first"
    run_training(compose_config(overrides), run_dir)
    state = torch.load(run_dir / "last_state.pt", weights_only=True)
    assert state["completed"] and state["fit_state"]["epoch"] == 2
    # Pretend the run was killed after epoch 2 of 3.
    state["completed"] = False
    torch.save(state, run_dir / "last_state.pt")
    resumed = compose_config(
        [*fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=3), "training.resume=true"]
    )
    other_classes = compose_config(
        [*fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=3), f"training.resume={run_dir}",
         "dataset.allowed_bird_classes=[Apus_apus,Bubo_bubo,Certhia_familiaris,Poecile_montanus]"]
    )
    with pytest.raises(CheckpointError, match="reorder|order"):
        run_training(other_classes, tmp_path / "ignored_new_dir")
    results = run_training(resumed, tmp_path / "ignored_new_dir")
    history = pd.read_csv(run_dir / "metrics.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    assert results["epochs_run"] == 3
    assert not (tmp_path / "ignored_new_dir" / "results.json").exists()


def _copy_corpus_with_bad_files(demo_corpus, tmp_path):
    bird_dir = tmp_path / "birds"
    shutil.copytree(demo_corpus.bird_dir, bird_dir)
    species = sorted(p for p in bird_dir.iterdir() if p.is_dir())[0]
    (species / "empty.wav").write_bytes(b"")
    (species / "garbage.mp3").write_bytes(b"definitely not audio" * 50)
    nan = np.zeros(32000, dtype=np.float32)
    nan[10] = np.nan
    sf.write(species / "nan.wav", nan, 32000, subtype="FLOAT")
    sf.write(species / "tiny.flac", np.zeros(50, dtype=np.float32), 32000)
    (species / "readme.txt").write_text("notes")
    return bird_dir


def test_bad_files_are_skipped_and_listed(demo_corpus, tmp_path):
    bird_dir = _copy_corpus_with_bad_files(demo_corpus, tmp_path)
    cfg = compose_config(fast_overrides(bird_dir, tmp_path, epochs=1))
    run_training(cfg, tmp_path / "run")
    skipped = pd.read_csv(tmp_path / "run" / "skipped_files.csv")
    names = {p.split("/")[-1]: r for p, r in zip(skipped["path"], skipped["reason"], strict=True)}
    assert "zero-length" in names["empty.wav"]
    assert "cannot decode" in names["garbage.mp3"]
    assert "NaN" in names["nan.wav"]
    assert "very short" in names["tiny.flac"]
    assert "readme.txt" in names
    assert json.loads((tmp_path / "run" / "results.json").read_text())["skipped_files"] == 5


def test_clear_errors_for_unusable_data_and_class_mismatch(tmp_path, demo_corpus):
    bad = tmp_path / "bad" / "Bubo_bubo"
    bad.mkdir(parents=True)
    (bad / "x.wav").write_bytes(b"")
    cfg = compose_config(
        [*fast_overrides(bad.parent, tmp_path), "dataset.allowed_bird_classes=[Bubo_bubo]"]
    )
    with pytest.raises(DatasetError, match="No usable audio"):
        run_training(cfg, tmp_path / "run")
    cfg = compose_config([*fast_overrides(demo_corpus.bird_dir, tmp_path), "model.n_classes=9"])
    with pytest.raises(ConfigError, match="model.n_classes=9"):
        run_training(cfg, tmp_path / "run2")
    with pytest.raises(CheckpointError, match="Poecile_montanus"):
        check_class_names(["Bubo_bubo", "no_birds"], ["Bubo_bubo", "Poecile_montanus", "no_birds"])


def test_cli_overrides_and_user_errors_exit_nonzero(tmp_path):
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "train.py", f"dataset.bird_data_dir={missing}", "training.epochs=1",
         "debug.files_limit=10", f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    unknown = subprocess.run(
        [sys.executable, "train.py", "training.no_such_key=1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert unknown.returncode != 0 and "no_such_key" in unknown.stderr


def test_one_epoch_on_real_recordings(shared_bird_dir, tmp_path):
    species = sorted(p.name for p in shared_bird_dir.iterdir() if p.is_dir())
    cfg = compose_config(
        [*fast_overrides(shared_bird_dir, tmp_path, epochs=1),
         f"dataset.allowed_bird_classes=[{','.join(species)}]", "dataset.group_regex=XC\\d+"]
    )
    results = run_training(cfg, tmp_path / "run")
    counts = results["windows_per_class"]["train"]
    assert all(counts[s] > 0 for s in species)
    assert results["skipped_files"] == 0
    assert len(results["class_names"]) == len(species) + 1

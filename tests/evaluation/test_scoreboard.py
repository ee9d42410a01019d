"""evaluate.py end to end: folds trained and scored by three models, resume, failed folds."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

import evaluation.scoreboard as scoreboard
from common.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.training.helpers import compose_config

MODELS = {"student", "birdnet", "birdnet_linear"}


@pytest.fixture(scope="module")
def birdnet_cache(tmp_path_factory):
    """One BirdNET window cache for the module: each file goes through BirdNET once."""
    return tmp_path_factory.mktemp("shared_cache")


def evaluate_config(bird_dir, esc50_dir, tmp, cache, *extra, name="evaluate"):
    return compose_config([
        f"dataset.bird_data_dir={bird_dir}",
        f"dataset.esc50_dir={esc50_dir}",
        f"dataset.cache_dir={cache / 'audio'}",
        f"paths.cache_dir={cache}",
        f"paths.log_dir={tmp / 'logs'}",
        "dataset.num_workers=0",
        "training.epochs=1",
        "training.batch_size=16",
        "evaluation.folds=2",
        "evaluation.inference.device=cpu",
        # A coarse hop keeps BirdNET's pass over the files short.
        "evaluation.birdnet.hop_s=3.0",
        "evaluation.inference.hop_s=3.0",
        *extra,
    ], config_name=name)


def demo_config(demo_corpus, tmp, cache, *extra, name="evaluate"):
    species = ",".join(demo_corpus.species)
    return evaluate_config(demo_corpus.bird_dir, demo_corpus.esc50_dir, tmp, cache,
                           f"dataset.allowed_bird_classes=[{species}]", *extra, name=name)


def test_two_folds_on_the_demo_corpus(demo_corpus, birdnet_cache, tmp_path):
    cfg = demo_config(demo_corpus, tmp_path, birdnet_cache)
    summary = scoreboard.run_evaluation(cfg, tmp_path / "run")
    run = tmp_path / "run"
    results = pd.read_csv(run / "cv_results.csv")
    assert len(results) == 6 and set(results["model"]) == MODELS
    assert sorted(set(results["fold"])) == [0, 1]
    for column in ("macro_f1", "accuracy", "balanced_accuracy", "macro_roc_auc",
                   *(f"f1_{s}" for s in demo_corpus.species), "f1_no_birds"):
        assert column in results and results[column].notna().all(), column
    assert results[["macro_f1", "accuracy"]].stack().between(0, 1).all()
    # Every fold's rows are on the same files, and the folds test disjoint recordings that
    # together cover the whole corpus.
    assert (results.groupby("fold")["test_files"].nunique() == 1).all()
    tested = []
    for fold in (0, 1):
        manifest = pd.read_csv(run / f"repeat0_fold{fold}" / "fold_manifest.csv")
        test = manifest[manifest["split"] == "test"]
        assert not set(test["group"]) & set(manifest.loc[manifest["split"] != "test", "group"])
        predictions = pd.read_csv(run / f"repeat0_fold{fold}" / "predictions.csv")
        assert set(predictions["model"]) == MODELS
        assert predictions.groupby("model")["file"].apply(frozenset).nunique() == 1
        tested.extend(test.loc[test["source"] == "bird", "path"])
    assert len(tested) == len(set(tested)) == 6 * len(demo_corpus.species)
    saved = json.loads((run / "cv_summary.json").read_text())
    assert set(saved["models"]) == MODELS
    assert saved["models"]["student"]["macro_f1"]["n"] == 2
    assert set(saved["ratios"]) == set(summary["ratios"]) == {
        "student/birdnet macro_f1", "birdnet_linear/birdnet macro_f1"}
    assert (run / "cv_macro_f1_boxplot.png").stat().st_size > 1000
    assert "BirdNET (restricted)" in (run / "cv_summary.txt").read_text()
    # The hard-label student has no projection head: no embedding figure.
    assert "embedding_cosine" not in results and "embedding_fidelity" not in saved
    assert json.loads((run / "evaluation_state.json").read_text())["completed"] is True


def test_resume_continues_from_the_finished_folds(demo_corpus, birdnet_cache, tmp_path,
                                                  monkeypatch):
    real_run_fold = scoreboard.run_fold
    calls: list[int] = []

    def interrupted(*args, **kwargs):
        fold = args[4]
        calls.append(fold)
        if fold == 1:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second fold
        return real_run_fold(*args, **kwargs)

    monkeypatch.setattr(scoreboard, "run_fold", interrupted)
    cfg = demo_config(demo_corpus, tmp_path, birdnet_cache)
    first_dir = tmp_path / "logs" / "evaluation" / "first"
    with pytest.raises(KeyboardInterrupt):
        scoreboard.run_evaluation(cfg, first_dir)
    after_one = pd.read_csv(first_dir / "cv_results.csv")
    assert set(after_one["fold"]) == {0}

    monkeypatch.setattr(scoreboard, "run_fold", lambda *a, **k: (calls.append(a[4]),
                                                                  real_run_fold(*a, **k))[1])
    calls.clear()
    resumed = demo_config(demo_corpus, tmp_path, birdnet_cache, "evaluation.resume=true")
    scoreboard.run_evaluation(resumed, tmp_path / "logs" / "evaluation" / "second")
    assert calls == [1]  # fold 0 was not trained again
    final = pd.read_csv(first_dir / "cv_results.csv")
    assert sorted(set(final["fold"])) == [0, 1]
    pd.testing.assert_frame_equal(final[final["fold"] == 0].reset_index(drop=True), after_one)

    # Other settings cannot resume that folder.
    other = demo_config(demo_corpus, tmp_path, birdnet_cache, "evaluation.folds=3",
                        f"evaluation.resume={first_dir}")
    with pytest.raises(scoreboard.ConfigError, match="other settings"):
        scoreboard.run_evaluation(other, tmp_path / "third")


def test_a_failed_fold_is_reported_and_the_others_kept(demo_corpus, birdnet_cache, tmp_path,
                                                       monkeypatch):
    real_run_fold = scoreboard.run_fold

    def failing(*args, **kwargs):
        if args[4] == 0:
            raise RuntimeError("out of memory (simulated)")
        return real_run_fold(*args, **kwargs)

    monkeypatch.setattr(scoreboard, "run_fold", failing)
    cfg = demo_config(demo_corpus, tmp_path, birdnet_cache)
    summary = scoreboard.run_evaluation(cfg, tmp_path / "run")
    failed = pd.read_csv(tmp_path / "run" / "failed_folds.csv")
    assert failed["fold"].tolist() == [0] and "out of memory" in failed["error"][0]
    assert summary["failed_folds"][0]["fold"] == 0
    assert set(pd.read_csv(tmp_path / "run" / "cv_results.csv")["fold"]) == {1}
    state = json.loads((tmp_path / "run" / "evaluation_state.json").read_text())
    assert state["completed"] is False  # so evaluation.resume=true retries fold 0


def test_distillation_recipe_per_fold(demo_corpus, demo_soft_labels, birdnet_cache, tmp_path):
    cfg = demo_config(demo_corpus, tmp_path, birdnet_cache,
                      f"dataset.soft_labels_path={demo_soft_labels}",
                      "evaluation.extract_soft_labels=false", name="evaluate_distillation")
    assert cfg.evaluation.trainer == "distillation"
    scoreboard.run_evaluation(cfg, tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "cv_results.csv")
    assert len(results) == 6
    checkpoint = torch.load(tmp_path / "run" / "repeat0_fold1" / "train" / "best_model.pt",
                            weights_only=True)
    assert checkpoint["config"]["loss"]["type"] == "distillation"
    assert checkpoint["config"]["dataset"]["split_manifest"].endswith("fold_manifest.csv")


def test_few_shot_on_real_recordings(shared_bird_dir, shared_esc50_dir, birdnet_cache,
                                     tmp_path):
    """Five real species, 3 training recordings each; BirdNET knows them well."""
    species = "Junco_hyemalis,Passer_domesticus,Setophaga_coronata,Spinus_psaltria," \
              "Zonotrichia_leucophrys"
    cfg = evaluate_config(shared_bird_dir, shared_esc50_dir, tmp_path, birdnet_cache,
                          f"dataset.allowed_bird_classes=[{species}]",
                          "dataset.group_regex=XC\\d+",
                          "dataset.esc50_categories=[rain,wind,engine,church_bells]",
                          "evaluation.train_recordings_per_class=3")
    scoreboard.run_evaluation(cfg, tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "cv_results.csv")
    assert (results["train_recordings"] == 15).all()
    birdnet = results[results["model"] == "birdnet"]
    linear = results[results["model"] == "birdnet_linear"]
    # BirdNET recognises these xeno-canto species; its embedding transfers with 3 recordings.
    assert birdnet["accuracy"].mean() > 0.7
    assert linear["accuracy"].mean() > 0.7


def test_cli_rejects_an_unknown_trainer_before_any_audio_work(tmp_path):
    result = subprocess.run(
        [sys.executable, "evaluate.py", "evaluation.trainer=magic",
         f"paths.log_dir={tmp_path}", f"dataset.bird_data_dir={tmp_path / 'none'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "evaluation.trainer=magic" in result.stderr


def test_embedding_recipe_per_fold(demo_corpus, demo_soft_labels, birdnet_cache, tmp_path):
    """The embedding-distillation recipe composes with the fold manifests. Its scoreboard
    holds no recording back for validation: every training recording trains and each fold
    keeps its final epoch."""
    cfg = demo_config(demo_corpus, tmp_path, birdnet_cache,
                      f"dataset.soft_labels_path={demo_soft_labels}",
                      f"dataset.unlabelled_dirs=[{demo_corpus.bird_dir}]",
                      "evaluation.extract_soft_labels=false",
                      name="evaluate_embedding_distillation")
    assert cfg.distillation.embedding_weight > 0 and cfg.model.embedding_dim == 1024
    assert cfg.evaluation.val_fraction == 0 and cfg.training.monitor == "last"
    scoreboard.run_evaluation(cfg, tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "cv_results.csv")
    assert len(results) == 6 and results["macro_f1"].notna().all()
    fold_dir = tmp_path / "run" / "repeat0_fold0"
    assert "val" not in set(pd.read_csv(fold_dir / "fold_manifest.csv")["split"])
    trained = json.loads((fold_dir / "train" / "results.json").read_text())
    assert trained["best_epoch"] == trained["epochs_run"] == cfg.training.epochs
    assert trained["val"] == {}
    # The student's projection against BirdNET's embedding, on its row only.
    student = results[results["model"] == "student"]
    for column in ("embedding_cosine", "embedding_cosine_train"):
        assert student[column].between(-1, 1).all() and student[column].notna().all()
        assert results.loc[results["model"] != "student", column].isna().all()
    saved = json.loads((tmp_path / "run" / "cv_summary.json").read_text())
    assert saved["embedding_fidelity"]["embedding_cosine"]["n"] == 2
    assert "held-out recordings" in (tmp_path / "run" / "cv_summary.txt").read_text()


def test_cli_rejects_a_bad_training_setting_before_birdnet_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "evaluate.py", "training.epochs=-1", f"paths.log_dir={tmp_path}",
         f"paths.cache_dir={tmp_path / 'cache'}", f"dataset.bird_data_dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "training.epochs" in result.stderr
    assert not (tmp_path / "cache" / "birdnet_windows").exists()


def test_birdnet_window_cache_survives_new_mtimes_but_not_new_bytes(tmp_path):
    """A copied or synced dataset (same bytes, new mtimes) keeps its BirdNET outputs; a file
    whose bytes changed is run through BirdNET again."""
    import os

    import numpy as np
    import soundfile as sf

    from evaluation.birdnet_windows import BirdNetWindowCache
    from tests.conftest import tone_burst, write_wav

    files = [str(write_wav(tmp_path / f"a{i}.wav", tone_burst(48000, 2000 + 500 * i, 4.0),
                           48000)) for i in range(2)]
    cache = BirdNetWindowCache(tmp_path / "cache")
    assert cache.ensure(files, []) == set(files)
    stored = {p: cache._path(p).stat().st_mtime_ns for p in files}
    first = cache.get(files[0]).logits.copy()

    computed: list[str] = []
    original = cache._compute
    cache._compute = lambda path: computed.append(path) or original(path)
    for path in files:
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 7_000_000_000))
    assert cache.ensure(files, []) == set(files) and computed == []
    assert all(cache._path(p).stat().st_mtime_ns != stored[p] for p in files)  # restamped
    assert cache.ensure(files, []) == set(files) and computed == []

    audio, sr = sf.read(files[0], dtype="int16")
    sf.write(files[0], (audio // 3).astype(np.int16), sr, subtype="PCM_16")
    assert cache.ensure(files, []) == set(files) and computed == [files[0]]
    fresh = BirdNetWindowCache(tmp_path / "cache").get(files[0]).logits
    assert fresh.shape == first.shape and not np.array_equal(fresh, first)


def test_without_validation_recordings_each_fold_keeps_its_last_epoch(demo_corpus,
                                                                       birdnet_cache, tmp_path):
    """evaluation.val_fraction=0 trains on every training recording; training.monitor=last
    keeps the final weights of each fold, since no validation split can pick an epoch."""
    cfg = demo_config(demo_corpus, tmp_path, birdnet_cache, "evaluation.val_fraction=0",
                      "training.monitor=last", "training.epochs=2", "training.patience=1")
    scoreboard.run_evaluation(cfg, tmp_path / "run")
    results = pd.read_csv(tmp_path / "run" / "cv_results.csv")
    assert len(results) == 6 and results["macro_f1"].notna().all()
    for fold in (0, 1):
        fold_dir = tmp_path / "run" / f"repeat0_fold{fold}"
        manifest = pd.read_csv(fold_dir / "fold_manifest.csv")
        assert "val" not in set(manifest["split"])
        trained = json.loads((fold_dir / "train" / "results.json").read_text())
        # patience=1 would stop after one epoch if "last" were an ordinary metric
        assert trained["epochs_run"] == trained["best_epoch"] == 2
        assert trained["val"] == {}


def test_no_validation_recordings_needs_the_last_epoch_monitor(demo_corpus, tmp_path):
    cfg = demo_config(demo_corpus, tmp_path, tmp_path / "cache", "evaluation.val_fraction=0")
    with pytest.raises(ConfigError, match="training.monitor=last"):
        scoreboard.run_evaluation(cfg, tmp_path / "run")
    assert not (tmp_path / "cache").exists()

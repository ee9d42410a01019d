import json
import subprocess
import sys

import pytest
import torch

from distillation.datasets.soft_label_dataset import MissingSoftLabelsError
from distillation.training_setup import resolved_alpha_temperature
from tests.conftest import REPO_ROOT
from tests.training.helpers import compose_config, fast_overrides
from training.run import run_training

CONFIG_DIR = REPO_ROOT / "distillation" / "configs"
CONFIGS = ["distillation_config", "focal_loss_config", "pure_focal_config",
           "adaptive_focal_config", "manual_weights_config", "manual_weights_quick",
           "test_distillation", "test_split_fix", "embedding_distillation", "pretrain_config"]


def distill_config(name, demo_corpus, soft_labels, tmp_path, *extra):
    return compose_config(
        [*fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=1),
         f"dataset.esc50_dir={demo_corpus.esc50_dir}", "debug.files_limit=null",
         f"paths.cache_dir={tmp_path / 'cache'}",
         *([f"dataset.soft_labels_path={soft_labels}"] if name != "pure_focal_config" else []),
         *extra],
        config_name=name, config_dir=CONFIG_DIR,
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_trains_an_epoch(name, demo_corpus, demo_soft_labels, tmp_path):
    from distillation.training_setup import distillation_loss_factory

    cfg = distill_config(name, demo_corpus, demo_soft_labels, tmp_path)
    results = run_training(cfg, tmp_path / "run", distillation_loss_factory)
    assert results["epochs_run"] == 1
    assert (tmp_path / "best_copy.pt").is_file()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["class_names"][-1] == "no_birds"


def test_alias_and_home_of_alpha_and_temperature(demo_corpus, demo_soft_labels, tmp_path):
    home = distill_config("distillation_config", demo_corpus, demo_soft_labels, tmp_path,
                          "distillation.alpha=0.2", "distillation.temperature=2.0")
    assert resolved_alpha_temperature(home) == (0.2, 2.0)
    alias = distill_config("distillation_config", demo_corpus, demo_soft_labels, tmp_path,
                           "training.alpha=0.7", "training.temperature=3.0")
    assert resolved_alpha_temperature(alias) == (0.7, 3.0)
    with pytest.raises(ValueError, match="alpha"):
        resolved_alpha_temperature(distill_config(
            "distillation_config", demo_corpus, demo_soft_labels, tmp_path, "training.alpha=1.5"))


def test_teacher_logits_reach_the_batches(demo_corpus, demo_soft_labels, tmp_path):
    from datasets.dataset_factory import build_data
    from distillation.training_setup import attach_soft_labels

    cfg = distill_config("distillation_config", demo_corpus, demo_soft_labels, tmp_path)
    data = build_data(cfg)
    attach_soft_labels(cfg, data)
    train = data.datasets["train"]
    item = train[0]
    assert item["teacher_logits"].shape == (len(data.class_names),)
    # Bird call windows all have teacher logits; ESC-50 clips are not labelled by extraction.
    kinds = {e.kind for e, has in zip(train.examples, train.has_teacher, strict=True) if not has}
    assert kinds <= {"esc50"}
    assert train.has_teacher.any() and torch.isfinite(item["teacher_logits"]).all()
    cfg_strict = distill_config("distillation_config", demo_corpus, demo_soft_labels, tmp_path,
                                "dataset.missing_soft_labels=error")
    with pytest.raises(MissingSoftLabelsError, match="extract_soft_labels.py"):
        attach_soft_labels(cfg_strict, build_data(cfg_strict))


def test_class_weight_cache_hit_and_force_recalculate(demo_corpus, demo_soft_labels, tmp_path):
    from datasets.dataset_factory import build_data
    from distillation.training_setup import class_weights_for

    cfg = distill_config("focal_loss_config", demo_corpus, demo_soft_labels, tmp_path)
    data = build_data(cfg)
    assert class_weights_for(cfg, data).source == "computed"
    assert class_weights_for(cfg, data).cache_hit
    forced = distill_config("focal_loss_config", demo_corpus, demo_soft_labels, tmp_path,
                            "loss.force_recalculate=true")
    assert class_weights_for(forced, data).source == "computed"
    wrong = distill_config("focal_loss_config", demo_corpus, demo_soft_labels, tmp_path,
                           "loss.class_weights=[1.0,2.0]")
    with pytest.raises(ValueError, match="5"):
        class_weights_for(wrong, data)


def test_cli_spec_command_and_missing_soft_labels(tmp_path):
    ok = subprocess.run(
        [sys.executable, "train_distillation.py", "--config-name=focal_loss_config",
         "training.alpha=0.7", "training.temperature=4.0", "training.epochs=50",
         "loss.weight_calculation_samples=2000", "loss.force_recalculate=true", "--cfg", "job"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(
        [sys.executable, "train_distillation.py", "dataset.bird_data_dir=/nonexistent",
         f"dataset.soft_labels_path={tmp_path / 'none'}", f"paths.log_dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode == 2 and "error:" in missing.stderr


def test_confidence_threshold_and_trusted_bird_labels(demo_corpus, demo_soft_labels, tmp_path):
    import numpy as np

    from datasets.dataset_factory import build_data
    from distillation.training_setup import attach_soft_labels

    def train_split(*extra):
        cfg = distill_config("distillation_config", demo_corpus, demo_soft_labels, tmp_path,
                             *extra)
        data = build_data(cfg)
        attach_soft_labels(cfg, data)
        return data.datasets["train"]

    plain = train_split("distillation.confidence_threshold=0.0",
                        "distillation.trust_bird_labels=false")
    strict = train_split("distillation.confidence_threshold=0.999")
    assert strict.has_teacher.sum() < plain.has_teacher.sum()
    trusted = train_split("distillation.confidence_threshold=0.0")
    labels = np.asarray(trusted.labels())
    bird = trusted.has_teacher & (labels != 4)
    # On species windows the teacher's no_birds never beats its weakest species.
    assert (trusted.teacher_logits[bird, 4] <= trusted.teacher_logits[bird, :4].min(1)).all()
    assert (plain.teacher_logits[bird, 4] > plain.teacher_logits[bird, :4].min(1)).any()


def test_default_recipe_is_embedding_distillation():
    """`python train_distillation.py` with no --config-name runs the best measured recipe
    (README), and the demo runs it with its unlabelled pool."""
    import yaml

    def job(*args):
        done = subprocess.run([sys.executable, "train_distillation.py", *args, "--cfg", "job"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)

    default, demo = job(), job("--config-name=demo_distillation")
    for cfg in (default, demo):
        assert cfg["distillation"]["embedding_weight"] > 0
        assert cfg["distillation"]["all_windows"] is True
        assert cfg["distillation"]["embedding_standardize"] is True
        assert cfg["model"]["embedding_dim"] == 1024
        assert cfg["distillation"]["view_prob"] == 0  # views measured harmful
        # Windows without a label learn the linear probe's class probabilities.
        assert cfg["distillation"]["teacher_classifier"] == "linear_probe"
        assert cfg["distillation"]["alpha"] > 0 and cfg["distillation"]["temperature"] == 1
        assert cfg["dataset"]["augmentation"]["mixup_alpha"] > 0
    assert default["experiment_name"] == "embedding_distillation"
    # Pre-training learns the same standardised targets (the raw embedding teaches nothing).
    pretrain = job("--config-name=pretrain_config")
    assert pretrain["training"]["stage"] == "pretrain"
    assert pretrain["distillation"]["embedding_standardize"] is True
    assert pretrain["distillation"]["teacher_classifier"] == "birdnet"  # no labels to fit
    assert demo["dataset"]["unlabelled_dirs"] == ["demo_data/unlabelled_field"]

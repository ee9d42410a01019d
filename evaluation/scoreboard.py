"""The scoreboard run: k folds (x repeats) of train -> test, three models on the same files.

For each fold the chosen recipe trains a student on the fold's training recordings
(``run_training``, exactly what train.py / train_distillation.py run), and three models score
the fold's held-back files with the benchmark's rules:

- ``student``: the trained checkpoint (benchmark.predict_student),
- ``birdnet``: BirdNET V2.4 restricted to the species (benchmark.predict_birdnet's scoring),
- ``birdnet_linear``: a logistic regression on BirdNET's embedding, fitted on the same
  training recordings (evaluation.linear_probe).

BirdNET's window outputs are computed once for all files (evaluation.birdnet_windows) and
decoded audio is cached by the training data layer, so k folds cost about k trainings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from benchmark.predict_birdnet import birdnet_file_scores
from benchmark.predict_student import predict_student
from benchmark.scoring import predictions_table
from common.errors import ConfigError
from common.file_io import save_table_atomic, write_json_atomic
from common.skipped_files import SkippedFile, write_skipped_files
from datasets.dataset_factory import (
    DataBundle,
    build_manifest,
    class_names_from_config,
)
from datasets.manifest_files import source_file, source_roots
from datasets.split_manifest import DatasetError, save_manifest
from distillation.losses.hard import CrossEntropyLoss
from evaluation.birdnet_windows import BirdNetWindowCache
from evaluation.embedding_fidelity import embedding_fidelity
from evaluation.folds import assign_folds, fold_manifest
from evaluation.linear_probe import fit_linear_head, linear_head_predictions, window_embeddings
from evaluation.report import metric_rows, write_outputs
from model_checkpoint import load_checkpoint
from training.config_checks import check_training_config
from training.run import check_validation_split, latest_unfinished, run_training

log = logging.getLogger(__name__)

MODELS = ("student", "birdnet", "birdnet_linear")
RESULTS_FILENAME = "cv_results.csv"
STATE_FILENAME = "evaluation_state.json"
FAILED_FILENAME = "failed_folds.csv"
TRAINERS = ("standard", "distillation")


def loss_factory_for(trainer: str) -> Callable | None:
    if trainer == "standard":
        return None
    if trainer == "distillation":
        from distillation.training_setup import distillation_loss_factory

        return distillation_loss_factory
    raise ConfigError(f"evaluation.trainer={trainer} is not one of {', '.join(TRAINERS)}")


def settings_digest(cfg: DictConfig) -> str:
    """What must not change between an interrupted evaluation and its resumption."""
    settings = OmegaConf.to_container(cfg, resolve=False)
    settings.get("evaluation", {}).pop("resume", None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def find_resume_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """``evaluation.resume``: false (this run's folder), true (latest unfinished) or a path."""
    resume = cfg.evaluation.resume
    if resume in (None, False, "false"):
        return run_dir
    if resume is True or resume == "true":
        root = Path(cfg.paths.log_dir) / str(cfg.experiment_name)
        state = latest_unfinished(
            root, STATE_FILENAME,
            lambda p: p.parent != run_dir and not json.loads(p.read_text()).get("completed"))
        if state is not None:
            return state.parent
        raise ConfigError(f"evaluation.resume=true but no unfinished evaluation under {root}")
    path = Path(str(resume))
    if not (path / STATE_FILENAME).is_file():
        raise ConfigError(f"evaluation.resume={resume}: no {STATE_FILENAME} there")
    return path


def _load_state(run_dir: Path, digest: str) -> pd.DataFrame:
    """Rows of the folds already finished in ``run_dir`` (empty for a new run)."""
    state_path = run_dir / STATE_FILENAME
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("settings_digest") != digest:
            raise ConfigError(
                f"The evaluation in {run_dir} was started with other settings; resume it with "
                "the same command line, or start a new one (evaluation.resume=false)."
            )
    results_path = run_dir / RESULTS_FILENAME
    if results_path.is_file():
        return pd.read_csv(results_path)
    return pd.DataFrame()


def _fold_config(cfg: DictConfig, fold_dir: Path, manifest_path: Path, seed: int) -> DictConfig:
    fold_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    fold_cfg.seed = seed
    fold_cfg.dataset.split_manifest = str(manifest_path)
    fold_cfg.training.save_path = str(fold_dir / "best_model.pt")
    fold_cfg.training.resume = False
    return fold_cfg


def _birdnet_table(files: list[str], labels: list[str], cache: BirdNetWindowCache,
                   class_names: list[str], indices: list[int], settings: DictConfig
                   ) -> pd.DataFrame:
    scores = [birdnet_file_scores(cache.get(f).logits, indices, float(settings.sensitivity),
                                  str(settings.aggregation)) for f in files]
    counts = [len(cache.get(f).starts) for f in files]
    species = np.array(scores) if scores else np.zeros((0, len(class_names) - 1))
    return predictions_table(files, labels, class_names, species,
                             float(settings.confidence_threshold), counts)


def run_fold(cfg: DictConfig, manifest: pd.DataFrame, fold_of: dict[str, int], repeat: int,
             fold: int, seed: int, run_dir: Path, cache: BirdNetWindowCache,
             usable: set[str], birdnet_indices: list[int],
             skipped: list[SkippedFile]) -> list[dict]:
    """Train on one fold, score its test files with the three models; metric rows."""
    ev = cfg.evaluation
    started = time.time()
    fold_dir = run_dir / f"repeat{repeat}_fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    table = fold_manifest(manifest, fold_of, fold, seed, float(ev.val_fraction),
                          ev.train_recordings_per_class)
    manifest_path = save_manifest(table, fold_dir / "fold_manifest.csv")
    fold_cfg = _fold_config(cfg, fold_dir, manifest_path, seed)
    roots = source_roots(fold_cfg.dataset)
    absolute = {row.path: str(source_file(roots, row.source, row.path))
                for row in table.itertuples()}

    recipe_loss = loss_factory_for(str(ev.trainer))
    seen: dict = {}

    def loss_factory(run_cfg: DictConfig, data: DataBundle):
        # The labelled windows the student learns from, for the linear head below (before a
        # distillation factory appends teacher-only windows to the training set).
        seen["examples"] = [e for split in ("train", "val")
                            for e in data.datasets[split].examples]
        seen["train_windows"] = len(data.datasets["train"])
        return recipe_loss(run_cfg, data) if recipe_loss else CrossEntropyLoss()

    results = run_training(fold_cfg, fold_dir / "train", loss_factory)
    model, checkpoint = load_checkpoint(fold_dir / "train" / "best_model.pt")
    class_names = list(checkpoint.class_names)

    test = table[table["split"] == "test"]
    files = [absolute[p] for p in test["path"] if absolute[p] in usable]
    labels = [lab for p, lab in zip(test["path"], test["label"], strict=True)
              if absolute[p] in usable]
    truth = pd.DataFrame({"file": files, "label": labels})
    inference = OmegaConf.create({"student_model": {"inference": OmegaConf.to_container(
        ev.inference, resolve=True)}})
    student = predict_student(model, checkpoint, truth, inference, skipped)
    birdnet = _birdnet_table(files, labels, cache, class_names, birdnet_indices, ev.birdnet)

    # The linear head learns from the labelled windows the student learned from, train and
    # validation alike (it needs no early stopping).
    examples = seen["examples"]
    clip_s = float(cfg.dataset.clip_duration)
    train_files = {p: f for p, f in absolute.items() if f in usable}
    embeddings, window_labels = window_embeddings(examples, train_files, cache, clip_s)
    head = fit_linear_head(embeddings, window_labels, float(ev.linear_head.C), seed)
    linear = linear_head_predictions(head, files, labels, cache, class_names,
                                     str(ev.inference.aggregation),
                                     float(ev.inference.confidence_threshold))

    # Only files every model scored, so the three rows are on the same files.
    common = set(student["file"]) & set(birdnet["file"]) & set(linear["file"])
    tables = {name: t[t["file"].isin(common)].reset_index(drop=True)
              for name, t in zip(MODELS, (student, birdnet, linear), strict=True)}
    predictions = pd.concat([t.assign(model=name) for name, t in tables.items()])
    save_table_atomic(predictions, fold_dir / "predictions.csv")
    train_recordings = int(table[(table["split"] != "test") & (table["source"] == "bird")]
                           ["group"].nunique())

    def files_of(test: bool, species_only: bool = True) -> list[str]:
        rows = table[((table["split"] == "test") == test)
                     & ((table["source"] == "bird") | (not species_only))]
        return [absolute[p] for p in rows["path"] if absolute[p] in usable]

    fidelity = embedding_fidelity(model, checkpoint, files_of(test=False), files_of(test=True),
                                  cache, float(ev.inference.hop_s),
                                  statistics_files=files_of(test=False, species_only=False))
    context = {
        "repeat": repeat, "fold": fold, "seed": seed,
        "test_files": len(common), "train_recordings": train_recordings,
        "train_windows": seen["train_windows"], "best_epoch": results.get("best_epoch"),
        "seconds": round(time.time() - started, 1),
    }
    rows = metric_rows(tables, class_names, context)
    for row in rows:
        if row["model"] == "student":
            row.update(fidelity)
    return rows


def run_evaluation(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Every fold of every repeat (finished folds of a resumed run are kept); the summary."""
    ev = cfg.evaluation
    loss_factory_for(str(ev.trainer))  # an unknown trainer fails before any audio work
    check_training_config(cfg)  # the recipe's settings too, not once per fold after BirdNET
    if float(ev.val_fraction) == 0:  # no validation recordings: every fold keeps its last epoch
        check_validation_split(cfg, 0)
    run_dir = find_resume_dir(cfg, Path(run_dir))
    log.info("Evaluation folder: %s", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = settings_digest(cfg)
    done = _load_state(run_dir, digest)
    write_json_atomic({"settings_digest": digest, "completed": False}, run_dir / STATE_FILENAME)

    class_names = class_names_from_config(cfg.dataset)
    skipped: list[SkippedFile] = []
    # All recordings of the species (and ESC-50 clips); folds re-split them.
    base_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    base_cfg.dataset.split_manifest = None
    manifest = build_manifest(base_cfg, class_names, skipped)
    roots = source_roots(cfg.dataset)
    files = [str(source_file(roots, row.source, row.path)) for row in manifest.itertuples()]

    if str(ev.trainer) == "distillation" and bool(ev.extract_soft_labels):
        _ensure_soft_labels(cfg, class_names)
    from birdnet.teacher import species_names

    names = species_names()
    birdnet_indices = [names.index(name) for name in class_names[:-1]]
    cache = BirdNetWindowCache(Path(cfg.paths.cache_dir) / "birdnet_windows",
                               float(ev.birdnet.hop_s), int(ev.birdnet.batch_size))
    usable = cache.ensure(files, skipped)

    rows = done.to_dict(orient="records") if not done.empty else []
    finished = {(int(r["repeat"]), int(r["fold"])) for r in rows}
    failures: list[dict] = []
    jobs = [(r, f) for r in range(int(ev.repeats)) for f in range(int(ev.folds))]
    if finished:
        log.info("Resuming: %d of %d folds already done", len(finished & set(jobs)), len(jobs))
    for repeat, fold in tqdm(jobs, desc="Folds", unit="fold"):
        if (repeat, fold) in finished:
            continue
        seed = int(cfg.seed) + repeat
        fold_of = assign_folds(manifest, int(ev.folds), seed)
        try:
            rows.extend(run_fold(cfg, manifest, fold_of, repeat, fold, seed, run_dir, cache,
                                 usable, birdnet_indices, skipped))
        except KeyboardInterrupt:
            raise
        except Exception as error:  # one failed fold must not lose the others
            log.error("Fold %d of repeat %d failed: %s", fold, repeat, error)
            failures.append({"repeat": repeat, "fold": fold, "error": str(error),
                             "traceback": traceback.format_exc()})
        save_table_atomic(pd.DataFrame(rows), run_dir / RESULTS_FILENAME)
    save_table_atomic(pd.DataFrame(failures, columns=["repeat", "fold", "error", "traceback"]),
                      run_dir / FAILED_FILENAME)
    write_skipped_files(skipped, run_dir / "skipped_files.csv")
    if not rows:
        raise DatasetError(f"Every fold failed; see {run_dir / FAILED_FILENAME}")
    summary = write_outputs(pd.DataFrame(rows), run_dir, class_names, failures,
                            {"folds": int(ev.folds), "repeats": int(ev.repeats),
                             "train_recordings_per_class": ev.train_recordings_per_class,
                             "trainer": str(ev.trainer),
                             "bird_data_dir": str(cfg.dataset.bird_data_dir)})
    write_json_atomic({"settings_digest": digest, "completed": not failures},
                      run_dir / STATE_FILENAME)
    return summary


def _ensure_soft_labels(cfg: DictConfig, class_names: list[str]) -> None:
    """Label every recording of the species once (resumable; a finished folder is reused)."""
    from distillation.soft_labels import extract_soft_labels

    if not cfg.dataset.soft_labels_path:
        raise ConfigError("evaluation.trainer=distillation needs dataset.soft_labels_path")
    summary = extract_soft_labels(
        class_names[:-1], str(cfg.dataset.soft_labels_path), str(cfg.dataset.bird_data_dir),
        # The teacher's pool: unlabelled folders too (their files that are test files of a
        # fold are dropped at training time), and augmented views when asked for.
        unlabelled_dirs=[str(d) for d in cfg.dataset.get("unlabelled_dirs") or []],
        views=int(cfg.evaluation.views), seed=int(cfg.seed),
        cache_dir=cfg.dataset.cache_dir,
        view_pitch_semitones=float(cfg.evaluation.view_pitch_semitones),
        view_partner_prob=float(cfg.evaluation.view_partner_prob),
    )
    log.info("Soft labels in %s: %d files computed, %d reused", summary.output,
             summary.computed, summary.reused)

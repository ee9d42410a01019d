"""Ground truth: which files to score and their true labels.

Default: the test split of the manifest stored in the student checkpoint, so the benchmark
never scores audio the student trained on. Held-out mode: every file in species folders.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from benchmark.paths import bench_path, repo_path
from common.skipped_files import SkippedFile
from datasets.file_scan import scan_audio_tree
from datasets.manifest_files import source_file, source_roots
from datasets.split_manifest import DatasetError, SourceFile, limit_files_per_class
from model_checkpoint import Checkpoint

log = logging.getLogger(__name__)

GROUND_TRUTH_COLUMNS = ["file", "path", "label", "source", "split"]


def checkpoint_roots(checkpoint: Checkpoint, cfg: DictConfig) -> dict[str, Path]:
    """Data folder of each manifest source: the checkpoint's own when it exists here, else
    the benchmark's settings."""
    paths = cfg.benchmark.paths
    fallback = {"bird": bench_path(paths.audio_dir), "esc50": bench_path(paths.esc50_dir),
                "no_birds": bench_path(paths.no_birds_dir)}
    own = source_roots(checkpoint.dataset_config)
    roots = {}
    for source, folder in fallback.items():
        candidate = repo_path(str(own[source])) if source in own else None
        roots[source] = candidate if candidate is not None and candidate.is_dir() else folder
    return roots


def test_split_ground_truth(checkpoint: Checkpoint, cfg: DictConfig,
                            skipped: list[SkippedFile]) -> pd.DataFrame:
    manifest = checkpoint.split_manifest
    if not manifest:
        raise DatasetError(
            "The checkpoint holds no split manifest, so its test split is unknown. Use a "
            "checkpoint written by train.py / train_distillation.py, or set "
            "benchmark.mode.use_test_set_only=false to score a held-out folder."
        )
    roots = checkpoint_roots(checkpoint, cfg)
    rows = []
    for row in manifest:
        if row["split"] != "test":
            continue
        file = source_file(roots, row["source"], row["path"], "the checkpoint's split manifest")
        if not file.is_file():
            skipped.append(SkippedFile(str(file), "test file not found", "discovery"))
            continue
        rows.append({"file": str(file), "path": row["path"], "label": row["label"],
                     "source": row["source"], "split": "test"})
    return pd.DataFrame(rows, columns=GROUND_TRUTH_COLUMNS)


def held_out_ground_truth(class_names: list[str], cfg: DictConfig,
                          skipped: list[SkippedFile]) -> pd.DataFrame:
    audio_dir = bench_path(cfg.benchmark.paths.audio_dir)
    if not audio_dir.is_dir():
        raise DatasetError(f"No audio files found: '{audio_dir}' does not exist "
                           "(benchmark.paths.audio_dir)")
    rows = []
    species = set(class_names[:-1])

    def report(path: Path, reason: str) -> None:
        skipped.append(SkippedFile(str(path), reason, "discovery"))

    for entry in sorted(audio_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            report(entry, "not a species folder (held-out audio goes in <Genus_species>/)")
            continue
        if entry.name not in species:
            report(entry, "species not in the model's classes")
            continue
        for file in scan_audio_tree(entry, report):
            rows.append({"file": str(file), "path": file.relative_to(audio_dir).as_posix(),
                         "label": entry.name, "source": "bird", "split": "held_out"})
    no_birds_dir = bench_path(cfg.benchmark.paths.no_birds_dir)
    if no_birds_dir.is_dir():
        for file in scan_audio_tree(no_birds_dir, report):
            rows.append({"file": str(file), "path": file.relative_to(no_birds_dir).as_posix(),
                         "label": "no_birds", "source": "no_birds", "split": "held_out"})
    return pd.DataFrame(rows, columns=GROUND_TRUTH_COLUMNS)


def apply_debug_limits(truth: pd.DataFrame, cfg: DictConfig) -> pd.DataFrame:
    """``debug.files_limit`` (stratified) and ``debug.test_with_subset``, in dev mode only."""
    debug = cfg.debug
    if not debug.dev_mode:
        if debug.files_limit or debug.test_with_subset:
            log.warning("debug limits are ignored because debug.dev_mode=false")
        return truth
    files = [SourceFile(r.file, r.label, r.source) for r in truth.itertuples()]
    if debug.test_with_subset:
        per_class: dict[str, int] = {}
        kept = []
        for f in files:
            if per_class.get(f.label, 0) < int(debug.subset_size):
                kept.append(f)
                per_class[f.label] = per_class.get(f.label, 0) + 1
        files = kept
    if debug.files_limit:
        files = limit_files_per_class(files, int(debug.files_limit))
    chosen = {f.path for f in files}
    return truth[truth["file"].isin(chosen)].reset_index(drop=True)


def discover(checkpoint: Checkpoint, cfg: DictConfig, skipped: list[SkippedFile]) -> pd.DataFrame:
    class_names = list(checkpoint.class_names)
    if cfg.benchmark.mode.use_test_set_only:
        truth = test_split_ground_truth(checkpoint, cfg, skipped)
    else:
        truth = held_out_ground_truth(class_names, cfg, skipped)
    truth = apply_debug_limits(truth, cfg)
    if truth.empty:
        raise DatasetError(
            "No audio files found to benchmark. Check that the test files exist (see "
            "skipped files) or set benchmark.paths.audio_dir / benchmark.paths.no_birds_dir."
        )
    unknown = sorted(set(truth["label"]) - set(class_names))
    if unknown:
        raise DatasetError(f"Ground truth has labels {unknown} the model does not know")
    log.info("Ground truth: %d files %s", len(truth), truth["label"].value_counts().to_dict())
    return truth

"""The benchmark's stages, in order, with reuse of unchanged stages."""

from __future__ import annotations

import logging

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from benchmark import stage_cache
from benchmark.compare_predictions import compare
from benchmark.discovery import discover
from benchmark.efficiency import measure_efficiency
from benchmark.paths import bench_path
from benchmark.predict_birdnet import predict_birdnet
from benchmark.predict_student import predict_student
from common.file_io import read_table, save_table_atomic
from common.skipped_files import SkippedFile, write_skipped_files
from model_checkpoint import load_checkpoint

log = logging.getLogger(__name__)

# Part of every stage key: bump when prediction or scoring code changes its output.
PREDICTION_CODE_VERSION = 2


def _stage(name: str, csv_path, key: str, compute, skipped: list[SkippedFile]) -> pd.DataFrame:
    """Reuse ``csv_path`` when its key matches, else compute it (skips are stored with it)."""
    skipped_path = csv_path.with_name(f".{csv_path.stem}.skipped.csv")
    table = stage_cache.reuse(csv_path, key)
    if table is not None and skipped_path.is_file():
        log.info("%s: inputs unchanged, reusing %s", name, csv_path)
        previous = read_table(skipped_path)
        skipped.extend(SkippedFile(**row) for row in previous.to_dict(orient="records"))
        return table
    own: list[SkippedFile] = []
    table = compute(own)
    write_skipped_files(own, skipped_path)
    stage_cache.save(table, csv_path, key)
    skipped.extend(own)
    return table


def run_benchmark(cfg: DictConfig) -> dict:
    out_dir = bench_path(cfg.benchmark.paths.output_dir)
    predictions = out_dir / "predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    model_path = bench_path(cfg.benchmark.paths.student_model)
    model, checkpoint = load_checkpoint(model_path)
    class_names = list(checkpoint.class_names)
    skipped: list[SkippedFile] = []

    truth = discover(checkpoint, cfg, skipped)
    save_table_atomic(truth, predictions / "ground_truth.csv")
    truth_digest = stage_cache.stage_key(files=truth.to_csv(index=False))

    student_key = stage_cache.stage_key(
        version=PREDICTION_CODE_VERSION, truth=truth_digest,
        model=stage_cache.file_digest(model_path),
        settings=OmegaConf.to_container(cfg.student_model, resolve=True),
    )
    student = _stage("Student predictions", predictions / "student_predictions.csv",
                     student_key, lambda s: predict_student(model, checkpoint, truth, cfg, s),
                     skipped)
    birdnet_settings = OmegaConf.to_container(cfg.birdnet, resolve=True)
    birdnet_key = stage_cache.stage_key(version=PREDICTION_CODE_VERSION, truth=truth_digest,
                                        classes=class_names,
                                        settings=birdnet_settings)
    birdnet = _stage("BirdNET predictions", predictions / "birdnet_predictions.csv",
                     birdnet_key, lambda s: predict_birdnet(class_names, truth, cfg, s), skipped)

    efficiency = None
    if cfg.efficiency.enabled:
        exported = cfg.efficiency.exported_dir
        efficiency = measure_efficiency(model_path, int(cfg.efficiency.windows),
                                        bench_path(exported) if exported else None)
    summary = compare(
        student, birdnet, class_names, out_dir / "comparison", efficiency=efficiency,
        bootstrap_samples=int(cfg.comparison.bootstrap_samples),
        seed=int(cfg.benchmark.seed), save_plots=bool(cfg.comparison.save_plots),
        plot_style=str(cfg.comparison.plot_style),
    )
    write_skipped_files(skipped, out_dir / "skipped_files.csv")
    if skipped:
        log.warning("%d files skipped; see %s", len(skipped), out_dir / "skipped_files.csv")
    s, b = summary["student"], summary["birdnet"]
    interval = summary["macro_f1_difference"]
    log.info(
        "Student macro-F1 %.3f (accuracy %.3f) | BirdNET macro-F1 %.3f (accuracy %.3f) | "
        "difference %+.3f [%+.3f, %+.3f]", s["macro_f1"], s["accuracy"], b["macro_f1"],
        b["accuracy"], interval["difference"], interval["ci95_low"], interval["ci95_high"],
    )
    log.info("Report: %s", out_dir / "comparison" / "comparison_report.txt")
    return summary

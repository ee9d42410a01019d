"""Soundscape mode of the benchmark: detection on annotated field recordings.

    python run_benchmark.py --config-name=soundscape benchmark.paths.annotations=labels.csv \
        benchmark.paths.student_model=../best_model.pt

Stages: annotations -> window scores of the student and of BirdNET (restricted to the
student's species; cached per recording) -> segment scores -> thresholds -> metrics, report,
per-segment table and plots in ``benchmark.paths.output_dir``.

Thresholds in use, per model and species (``soundscape.thresholds``): ``fixed`` when set;
otherwise chosen on the checkpoint's validation split with the rule of ``export.calibrate``
(the same code as ``python -m export.calibrate``), for the student and for BirdNET alike; with
``benchmark.paths.exported_dir`` the student uses the thresholds stored in that export's
model.json, which are what ``predict.py`` applies.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from benchmark import soundscape_plots, stage_cache
from benchmark.discovery import checkpoint_roots
from benchmark.paths import bench_path
from benchmark.soundscape_annotations import load_segments, target_sets
from benchmark.soundscape_report import format_report
from benchmark.soundscape_scoring import (
    bootstrap_intervals,
    detection_metrics,
    segment_scores,
    segments_table,
    truth_matrix,
)
from benchmark.soundscape_windows import (
    birdnet_scorer,
    cached_window_scores,
    student_scorer,
)
from common.errors import ConfigError
from common.file_io import save_table_atomic, write_atomic, write_json_atomic
from common.runtime import resolve_device
from common.skipped_files import SkippedFile, write_skipped_files
from datasets.split_manifest import DatasetError
from model_checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger(__name__)

MODELS = ("student", "birdnet")
CALIBRATION_CODE_VERSION = 1
DEFAULT_THRESHOLD = 0.5


def _check_settings(cfg: DictConfig) -> None:
    s = cfg.soundscape
    if float(s.min_overlap_s) < 0:
        raise ConfigError(f"soundscape.min_overlap_s must be >= 0, got {s.min_overlap_s}")
    fixed = s.thresholds.fixed
    if fixed is not None and not 0.0 <= float(fixed) <= 1.0:
        raise ConfigError(f"soundscape.thresholds.fixed must be within [0, 1], got {fixed}")
    if s.thresholds.rule not in ("best_f1", "precision"):
        raise ConfigError(f"soundscape.thresholds.rule must be best_f1 or precision, got "
                          f"{s.thresholds.rule!r}")


def _validation_scores(checkpoint: Checkpoint, model_path: Path, model, device, cfg: DictConfig,
                       species: list[str], cache_path: Path) -> pd.DataFrame:
    """Student and BirdNET scores of the checkpoint's validation windows (cached)."""
    from birdnet.teacher import SAMPLE_RATE, WINDOW_SAMPLES
    from datasets.audio_utils import pad_or_crop, resample
    from edge.errors import EdgeError
    from export.calibration_windows import split_windows

    roots = checkpoint_roots(checkpoint, cfg)
    birdnet_settings = OmegaConf.to_container(cfg.birdnet, resolve=True)
    key = stage_cache.stage_key(version=CALIBRATION_CODE_VERSION,
                                model=stage_cache.file_digest(model_path),
                                roots={k: str(v) for k, v in roots.items()},
                                birdnet=birdnet_settings, species=species)
    table = stage_cache.reuse(cache_path, key)
    if table is not None:
        log.info("Validation scores: inputs unchanged, reusing %s", cache_path)
        return table
    try:
        windows = split_windows(checkpoint, "val", roots=roots, purpose="threshold calibration")
    except EdgeError as error:
        raise DatasetError(f"{error}. Or set soundscape.thresholds.fixed") from error
    n = len(species)
    student = student_scorer(model, device, int(cfg.student_model.inference.batch_size), n)
    sample_rate = int(checkpoint.audio.sample_rate)

    # BirdNET hears the same windows, resampled to 48 kHz (the student's band is within it).
    birdnet_windows = np.stack([pad_or_crop(resample(w, sample_rate, SAMPLE_RATE),
                                            WINDOW_SAMPLES) for w in windows.audio])
    table = pd.DataFrame({"path": windows.paths, "start": windows.starts,
                          "label": windows.labels})
    student_scores = student(windows.audio)
    birdnet_scores = birdnet_scorer(species, cfg.birdnet)(birdnet_windows.astype(np.float32))
    for c, name in enumerate(species):
        table[f"student_{name}"] = np.round(student_scores[:, c], 6)
        table[f"birdnet_{name}"] = np.round(birdnet_scores[:, c], 6)
    stage_cache.save(table, cache_path, key)
    return table


def _thresholds(cfg: DictConfig, checkpoint: Checkpoint, model_path: Path, model, device,
                species: list[str], cache_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Per-model threshold vectors and a description of where they came from."""
    from export.calibrate import calibrate_thresholds

    settings = cfg.soundscape.thresholds
    n = len(species)
    if settings.fixed is not None:
        value = float(settings.fixed)
        return ({m: np.full(n, value) for m in MODELS},
                {m: {"source": "fixed", "value": value} for m in MODELS})
    name = f"validation_scores.{stage_cache.file_digest(model_path)[:12]}.csv"
    table = _validation_scores(checkpoint, model_path, model, device, cfg, species,
                               cache_dir / name)
    out, about = {}, {}
    labels = table["label"].to_numpy(int)
    for m in MODELS:
        scores = table[[f"{m}_{name}" for name in species]].to_numpy(float)
        choices = calibrate_thresholds(scores, labels, species, str(settings.rule),
                                       float(settings.target_precision))
        out[m] = np.array([choices[s].threshold if s in choices else DEFAULT_THRESHOLD
                           for s in species])
        about[m] = {"source": "validation split", "rule": str(settings.rule),
                    "target_precision": float(settings.target_precision)
                    if settings.rule == "precision" else None,
                    "windows": len(table),
                    "per_species": {s: asdict(c) for s, c in choices.items()}}
    exported = cfg.benchmark.paths.exported_dir
    if exported:
        from edge.errors import EdgeError
        from edge.sidecar import read_sidecar

        try:
            info = read_sidecar(bench_path(exported))
        except EdgeError as error:
            raise DatasetError(f"benchmark.paths.exported_dir: {error}") from error
        if info.species != species:
            raise DatasetError(f"{exported} was exported for {info.species}, not the "
                               f"checkpoint's {species}")
        out["student"] = np.array([float(info.thresholds.get(s, DEFAULT_THRESHOLD))
                                   for s in species])
        about["student"] = {"source": f"{bench_path(exported)}/model.json",
                            **(info.threshold_calibration or {})}
    return out, about


def run_soundscape(cfg: DictConfig) -> dict:
    _check_settings(cfg)
    out_dir = bench_path(cfg.benchmark.paths.output_dir)
    # BirdNET's window scores depend on the species, not on the student: a shared cache
    # lets several students be compared without labelling the recordings again.
    shared = cfg.benchmark.paths.soundscape_cache_dir
    cache_dir = bench_path(shared) if shared else out_dir / "predictions"
    cache_dir.mkdir(parents=True, exist_ok=True)
    model_path = bench_path(cfg.benchmark.paths.student_model)
    model, checkpoint = load_checkpoint(model_path)
    class_names = list(checkpoint.class_names)
    species = class_names[:-1]
    skipped: list[SkippedFile] = []

    annotations = bench_path(cfg.benchmark.paths.annotations)
    audio_dir = cfg.benchmark.paths.soundscape_audio_dir
    from export.onnx_export import common_names_for

    common = {v: k for k, v in common_names_for(species).items()}
    segments = load_segments(annotations, bench_path(audio_dir) if audio_dir else None,
                             float(cfg.soundscape.segment_s), common, skipped)
    files = list(dict.fromkeys(segments["file"]))
    log.info("%d annotated segments in %d recordings", len(segments), len(files))

    inference = cfg.student_model.inference
    device = resolve_device(inference.device, "student_model.inference.device")
    model = model.to(device).eval()
    clip_s = float(checkpoint.audio.clip_duration)
    windows = {
        "student": cached_window_scores(
            files, "student", stage_cache.file_digest(model_path), cache_dir / "windows",
            student_scorer(model, device, int(inference.batch_size), len(species)),
            int(checkpoint.audio.sample_rate), clip_s, float(inference.hop_s), species,
            skipped),
        "birdnet": cached_window_scores(
            files, "birdnet", OmegaConf.to_container(cfg.birdnet, resolve=True),
            cache_dir / "windows", lambda: birdnet_scorer(species, cfg.birdnet), 48000, 3.0,
            float(cfg.birdnet.hop_s), species, skipped, lazy=True),
    }
    min_overlap = float(cfg.soundscape.min_overlap_s)
    scores = {m: segment_scores(segments, windows[m], species, min_overlap) for m in MODELS}
    covered = ~np.isnan(scores["student"]).any(axis=1) & ~np.isnan(scores["birdnet"]).any(axis=1)
    if not covered.all():
        log.warning("%d segments have no scored window (recording skipped or shorter than its "
                    "annotations); they are left out", int((~covered).sum()))
    segments = segments[covered].reset_index(drop=True)
    scores = {m: s[covered] for m, s in scores.items()}
    if segments.empty:
        raise DatasetError("no annotated segment could be scored; see skipped_files.csv")
    targets = target_sets(segments, species)
    truth = truth_matrix(targets, species)
    durations = (segments["end"] - segments["start"]).to_numpy(float)
    thresholds, threshold_info = _thresholds(cfg, checkpoint, model_path, model, device,
                                             species, cache_dir)

    samples, seed = int(cfg.comparison.bootstrap_samples), int(cfg.benchmark.seed)
    recording = segments["file"].to_numpy()
    results = {}
    for m in MODELS:
        metrics = detection_metrics(truth, scores[m], thresholds[m], durations, species)
        metrics["ci95"] = bootstrap_intervals(recording, truth, scores[m], thresholds[m],
                                              durations, species, samples, seed)
        metrics["thresholds"] = threshold_info[m]
        results[m] = metrics
    summary = {
        "annotations": str(annotations),
        "recordings": len(files),
        "segments": int(len(segments)),
        "species": species,
        "segments_with_targets": {s: int(truth[:, c].sum()) for c, s in enumerate(species)},
        "no_target_segments": int((~truth.any(axis=1)).sum()),
        "window_hop_s": {"student": float(inference.hop_s), "birdnet": float(cfg.birdnet.hop_s)},
        "min_overlap_s": min_overlap,
        "bootstrap": {"samples": samples, "unit": "recording"},
        **results,
    }
    _write_outputs(out_dir, summary, segments, targets, species, scores, thresholds, windows,
                   truth, cfg)
    write_skipped_files(skipped, out_dir / "skipped_files.csv")
    if skipped:
        log.warning("%d files skipped; see %s", len(skipped), out_dir / "skipped_files.csv")
    log.info("Report: %s", out_dir / "soundscape_report.txt")
    return summary


def _timeline_file(cfg: DictConfig, segments: pd.DataFrame, truth: np.ndarray) -> str:
    wanted = cfg.soundscape.timeline_file
    files = list(dict.fromkeys(segments["file"]))
    if wanted:
        named = [f for f in files if Path(f).name == str(wanted)]
        if not named:
            raise ConfigError(f"soundscape.timeline_file {wanted!r} is not an annotated "
                              f"recording; choose one of {[Path(f).name for f in files]}")
        return named[0]
    counts = pd.Series(truth.any(axis=1)).groupby(segments["file"].to_numpy()).sum()
    return str(counts.idxmax())


def _write_outputs(out_dir: Path, summary: dict, segments: pd.DataFrame, targets, species,
                   scores, thresholds, windows, truth, cfg: DictConfig) -> None:
    save_table_atomic(segments_table(segments, targets, species, scores),
                      out_dir / "soundscape_segments.csv")
    write_json_atomic(summary, out_dir / "soundscape_report.json")
    text = format_report(summary)
    write_atomic(out_dir / "soundscape_report.txt", lambda h: h.write(text.encode("utf-8")))
    log.info("\n%s", text)
    if cfg.comparison.save_plots:
        soundscape_plots.pr_curves(truth, scores, thresholds, species,
                                   out_dir / "pr_curves.png")
        soundscape_plots.timeline(_timeline_file(cfg, segments, truth), segments, targets,
                                  windows, thresholds, species, out_dir / "timeline.png")

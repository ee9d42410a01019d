"""Soundscape metrics: window scores -> segment scores -> per-species detection metrics.

A segment's score for a species is the max over the model's windows overlapping it (by more
than ``min_overlap_s``). Truth per segment and species: the species is annotated there.
Metrics on the species the student knows:

- threshold-free: average precision and ROC-AUC per species (over segments; undefined when a
  species never or always occurs) and their macro means;
- at the thresholds in use: precision, recall, F1 per species and macro;
- false detections per hour: on segments where none of the student's species is annotated
  (no bird, or only birds the student does not know), each segment whose score reaches a
  species' threshold is one false detection of that species, divided by those segments'
  hours.

Each metric also gets a bootstrap 95% interval over recordings (recordings drawn with
replacement, all their segments kept together).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def segment_scores(segments: pd.DataFrame, windows: pd.DataFrame, species: Sequence[str],
                   min_overlap_s: float = 0.0) -> np.ndarray:
    """(n_segments, n_species) max window score per segment; NaN where no window overlaps."""
    out = np.full((len(segments), len(species)), np.nan)
    columns = list(species)
    for file, rows in segments.groupby("file", sort=False):
        mine = windows[windows["file"] == file]
        if mine.empty:
            continue
        w_start = mine["start"].to_numpy(float)
        w_end = mine["end"].to_numpy(float)
        w_scores = mine[columns].to_numpy(float)
        for index, a, b in zip(rows.index, rows["start"], rows["end"], strict=True):
            overlap = np.minimum(w_end, b) - np.maximum(w_start, a)
            hit = overlap > max(min_overlap_s, 0.0)
            if hit.any():
                out[index] = w_scores[hit].max(axis=0)
    return out


def truth_matrix(targets: Sequence[tuple[str, ...]], species: Sequence[str]) -> np.ndarray:
    return np.array([[name in present for name in species] for present in targets],
                    dtype=bool).reshape(len(targets), len(species))


def _safe(metric, y: np.ndarray, s: np.ndarray) -> float | None:
    if y.all() or not y.any():
        return None
    return float(metric(y, s))


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def detection_metrics(truth: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
                      durations: np.ndarray, species: Sequence[str]) -> dict:
    """Per-species and macro metrics of one model (see the module docstring)."""
    no_target = ~truth.any(axis=1)
    hours = float(durations[no_target].sum()) / 3600.0
    detected = scores >= thresholds[None, :]
    per_species = {}
    for c, name in enumerate(species):
        y, s, d = truth[:, c], scores[:, c], detected[:, c]
        tp, fp, fn = int((d & y).sum()), int((d & ~y).sum()), int((~d & y).sum())
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = (2 * tp / (2 * tp + fp + fn)) if tp + fn else None
        false_on_empty = int((d & no_target).sum())
        per_species[name] = {
            "threshold": float(thresholds[c]),
            "positives": int(y.sum()),
            "average_precision": _safe(average_precision_score, y, s),
            "roc_auc": _safe(roc_auc_score, y, s),
            "precision": precision, "recall": recall, "f1": f1,
            "true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "false_detections_no_target": false_on_empty,
            "false_detections_per_hour": false_on_empty / hours if hours else None,
        }
    values = per_species.values()
    total_false = sum(v["false_detections_no_target"] for v in values)
    return {
        "per_species": per_species,
        "macro_average_precision": _mean([v["average_precision"] for v in values]),
        "macro_roc_auc": _mean([v["roc_auc"] for v in values]),
        "macro_precision": _mean([v["precision"] for v in values]),
        "macro_recall": _mean([v["recall"] for v in values]),
        "macro_f1": _mean([v["f1"] for v in values]),
        "false_detections_per_hour": total_false / hours if hours else None,
        "no_target_segments": int(no_target.sum()),
        "no_target_hours": hours,
        "segments": int(len(truth)),
    }


def _flat(metrics: dict) -> dict[str, float | None]:
    """The numbers a bootstrap interval is given for: macro values and per-species ones."""
    flat = {k: v for k, v in metrics.items() if k.startswith("macro_")
            or k == "false_detections_per_hour"}
    for name, values in metrics["per_species"].items():
        for key in ("average_precision", "roc_auc", "precision", "recall", "f1",
                    "false_detections_per_hour"):
            flat[f"{name}/{key}"] = values[key]
    return flat


def bootstrap_intervals(files: np.ndarray, truth: np.ndarray, scores: np.ndarray,
                        thresholds: np.ndarray, durations: np.ndarray, species: Sequence[str],
                        samples: int, seed: int) -> dict[str, list[float] | None]:
    """95% percentile interval of every metric of ``_flat`` over recordings drawn with
    replacement; None where the metric was undefined in most draws."""
    recordings = np.unique(files)
    rows_of = {f: np.nonzero(files == f)[0] for f in recordings}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(samples):
        pick = np.concatenate([rows_of[f] for f in rng.choice(recordings, len(recordings))])
        flat = _flat(detection_metrics(truth[pick], scores[pick], thresholds, durations[pick],
                                       species))
        for key, value in flat.items():
            draws.setdefault(key, [])
            if value is not None:
                draws[key].append(value)
    intervals: dict[str, list[float] | None] = {}
    for key, values in draws.items():
        if len(values) < samples / 2:
            intervals[key] = None
            continue
        low, high = np.percentile(values, [2.5, 97.5])
        intervals[key] = [float(low), float(high)]
    return intervals


def segments_table(segments: pd.DataFrame, targets: Sequence[tuple[str, ...]],
                   species: Sequence[str], scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """The per-segment CSV: annotation, targets, and each model's score per species."""
    table = pd.DataFrame({
        "file": segments["file"].map(lambda p: p.rsplit("/", 1)[-1]),
        "start": segments["start"], "end": segments["end"],
        "annotated": [" ".join(s) for s in segments["species"]],
        "targets": [" ".join(t) for t in targets],
    })
    for model, values in scores.items():
        for c, name in enumerate(species):
            table[f"{model}_{name}"] = np.round(values[:, c], 6)
    return table

"""Labelled 3 s windows of one split of the checkpoint's own split manifest.

INT8 calibration uses training-split windows and the parity check test-split windows, so
neither ever sees audio from the other side of the split. Windows are chosen the way
training chose them: windows around detected calls for bird recordings (when the run used
``extract_calls``), consecutive windows for no_birds sources (ESC-50 clips, pregenerated
no_birds clips).

Manifest paths are relative to the folders in the checkpoint's config; data moves between
machines, so every folder can be overridden (``roots``: keys ``bird``, ``esc50``,
``no_birds``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.safe_paths import path_inside
from common.skipped_files import SkippedFile
from datasets.audio_utils import (
    AudioLoadError,
    detect_call_windows,
    load_audio,
    pad_or_crop,
    sliding_window_starts,
)
from edge.errors import EdgeError

log = logging.getLogger(__name__)

# Manifest "source" -> the dataset config key holding its root folder.
ROOT_CONFIG_KEYS: dict[str, str] = {
    "bird": "bird_data_dir",
    "esc50": "esc50_dir",
    "no_birds": "pregenerated_no_birds_dir",
}


@dataclass
class LabelledWindows:
    audio: np.ndarray  # (n, clip_samples) float32 at the model's sample rate
    labels: np.ndarray  # (n,) class indices into the checkpoint's class_names
    paths: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def source_roots(checkpoint: dict, overrides: dict[str, str | Path] | None = None) -> dict:
    """Root folder of each manifest source: overrides first, else the training config."""
    dataset_cfg = (checkpoint.get("config") or {}).get("dataset") or {}
    roots = {}
    for source, key in ROOT_CONFIG_KEYS.items():
        value = (overrides or {}).get(source) or dataset_cfg.get(key)
        if value:
            roots[source] = Path(value)
    return roots


def _window_starts(audio: np.ndarray, sr: int, clip_s: float, source: str,
                   dataset_cfg: dict) -> list[float]:
    total_s = len(audio) / sr
    if source == "bird" and dataset_cfg.get("extract_calls", True):
        band = dataset_cfg.get("call_band_hz") or (300.0, 11000.0)
        starts, _ = detect_call_windows(
            audio, sr, clip_s, band_hz=(float(band[0]), float(band[1])),
            k=float(dataset_cfg.get("call_threshold_k", 2.0)),
        )
        return starts
    return sliding_window_starts(total_s, clip_s, clip_s)


def _missing_root_hint(roots: dict[str, Path], sources: set[str]) -> str:
    flags = {"bird": "--bird_dir", "esc50": "--esc50_dir", "no_birds": "--no_birds_dir"}
    missing = [f"{s} ({roots.get(s, 'not configured')}; {flags[s]})" for s in sorted(sources)
               if s not in roots or not roots[s].is_dir()]
    return f" Missing folders: {', '.join(missing)}." if missing else ""


def split_windows(
    checkpoint: dict,
    split: str,
    *,
    max_windows: int | None = None,
    roots: dict[str, str | Path] | None = None,
    seed: int = 0,
    purpose: str = "windows",
) -> LabelledWindows:
    """Windows of ``split`` with their labels. ``max_windows`` caps the count: recordings are
    visited in a seeded random order, taking at most ``ceil(max / recordings)`` windows each,
    so a cap also bounds how many files are decoded."""
    manifest = [row for row in checkpoint.get("split_manifest") or [] if row["split"] == split]
    if not manifest:
        raise EdgeError(
            f"the checkpoint has no {split}-split rows in its split manifest, needed for "
            f"{purpose}; use a checkpoint saved by this project's training"
        )
    class_names = list(checkpoint["class_names"])
    sr = int(checkpoint["audio"]["sample_rate"])
    clip_s = float(checkpoint["audio"]["clip_duration"])
    clip = int(round(sr * clip_s))
    dataset_cfg = (checkpoint.get("config") or {}).get("dataset") or {}
    root_of = source_roots(checkpoint, roots)

    order = np.random.default_rng(seed).permutation(len(manifest))
    per_file = math.ceil(max_windows / len(manifest)) if max_windows else None
    rng = np.random.default_rng(seed + 1)
    audio, labels, paths, starts_out, skipped = [], [], [], [], []
    for i in tqdm(order, desc=f"{purpose} ({split} split)", unit="file", leave=False):
        if max_windows and len(labels) >= max_windows:
            break
        row = manifest[i]
        root = root_of.get(row["source"])
        path = path_inside(root or ".", row["path"], "the checkpoint's split manifest")
        if row["label"] not in class_names:
            skipped.append(SkippedFile(str(path), f"label {row['label']} not a model class",
                                       purpose))
            continue
        try:
            signal, _ = load_audio(path, sr)
        except AudioLoadError as error:
            skipped.append(SkippedFile(str(path), str(error), purpose))
            continue
        starts = _window_starts(signal, sr, clip_s, row["source"], dataset_cfg)
        if per_file and len(starts) > per_file:
            starts = sorted(rng.choice(starts, size=per_file, replace=False).tolist())
        for start in starts:
            audio.append(pad_or_crop(signal, clip, int(round(start * sr))))
            labels.append(class_names.index(row["label"]))
            paths.append(row["path"])
            starts_out.append(float(start))
    if skipped:
        log.warning("%d %s-split files could not be used for %s (first: %s: %s)",
                    len(skipped), split, purpose, skipped[0].path, skipped[0].reason)
    if not labels:
        sources = {row["source"] for row in manifest}
        raise EdgeError(
            f"no {split}-split audio could be read for {purpose}: the checkpoint's manifest "
            f"points to folders that are not on this machine.{_missing_root_hint(root_of, sources)}"
        )
    if max_windows:
        audio, labels = audio[:max_windows], labels[:max_windows]
        paths, starts_out = paths[:max_windows], starts_out[:max_windows]
    log.info("%s: %d windows from the %s split", purpose, len(labels), split)
    return LabelledWindows(np.stack(audio).astype(np.float32), np.asarray(labels, dtype=int),
                           paths, starts_out, skipped)

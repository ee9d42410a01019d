"""Labelled 3 s windows of one split of the checkpoint's own split manifest.

INT8 calibration uses training-split windows and the parity check test-split windows, so
neither ever sees audio from the other side of the split. Windows are chosen by training's
own code with the checkpoint's window settings (``datasets.windows``): windows around
detected calls of bird recordings and their quiet stretches as no_birds, the loudest window
of a short no_birds clip (ESC-50, pregenerated), consecutive windows of a long one.

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

from common.skipped_files import SkippedFile
from datasets.audio_utils import AudioLoadError, load_audio
from datasets.bird_dataset import NO_BIRDS
from datasets.manifest_files import missing_roots_hint, source_file, source_roots
from datasets.windows import cut_windows, training_window_starts, window_settings_from_config
from edge.errors import EdgeError
from model_checkpoint import Checkpoint

log = logging.getLogger(__name__)

@dataclass
class LabelledWindows:
    audio: np.ndarray  # (n, clip_samples) float32 at the model's sample rate
    labels: np.ndarray  # (n,) class indices into the checkpoint's class_names
    paths: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def split_windows(
    checkpoint: Checkpoint,
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
    manifest = [row for row in checkpoint.split_manifest or [] if row["split"] == split]
    if not manifest and checkpoint.split_manifest:
        # Trained with a zero share for this split (e.g. no validation, training.monitor=last).
        raise EdgeError(
            f"the checkpoint was trained without a {split} split (dataset.split_ratios gave it "
            f"no recordings), and {purpose} needs one; train with a {split} share, or set "
            "the thresholds by hand"
        )
    if not manifest:
        raise EdgeError(
            f"the checkpoint has no {split}-split rows in its split manifest, needed for "
            f"{purpose}; use a checkpoint saved by this project's training"
        )
    class_names = list(checkpoint.class_names)
    sr = int(checkpoint.audio.sample_rate)
    clip_s = float(checkpoint.audio.clip_duration)
    clip = int(round(sr * clip_s))
    dataset_cfg = checkpoint.dataset_config
    root_of = source_roots(dataset_cfg, roots)
    settings = window_settings_from_config({**dataset_cfg, "clip_duration": clip_s})

    order = np.random.default_rng(seed).permutation(len(manifest))
    per_file = math.ceil(max_windows / len(manifest)) if max_windows else None
    rng = np.random.default_rng(seed + 1)
    audio, labels, paths, starts_out, skipped = [], [], [], [], []
    for i in tqdm(order, desc=f"{purpose} ({split} split)", unit="file", leave=False):
        if max_windows and len(labels) >= max_windows:
            break
        row = manifest[i]
        if row["source"] not in root_of:
            skipped.append(SkippedFile(row["path"], f"no folder for source {row['source']}",
                                       purpose))
            continue
        path = source_file(root_of, row["source"], row["path"], "the checkpoint's split manifest")
        if row["label"] not in class_names:
            skipped.append(SkippedFile(str(path), f"label {row['label']} not a model class",
                                       purpose))
            continue
        try:
            signal, _ = load_audio(path, sr)
        except AudioLoadError as error:
            skipped.append(SkippedFile(str(path), str(error), purpose))
            continue
        bird = row["source"] == "bird" and row["label"] != NO_BIRDS
        found = training_window_starts(signal, sr, settings, bird)
        # Training's examples of this file: its call windows with the file's label, and the
        # quiet stretches of a bird recording as no_birds.
        examples = [(start, row["label"]) for start in found.call_starts]
        if NO_BIRDS in class_names:
            examples += [(start, NO_BIRDS) for start in found.quiet_starts]
        if per_file and len(examples) > per_file:
            picked = rng.choice(len(examples), size=per_file, replace=False)
            examples = [examples[i] for i in sorted(picked)]
        starts = [start for start, _ in examples]
        audio.extend(cut_windows(signal, sr, starts, clip))
        labels += [class_names.index(label) for _, label in examples]
        paths += [row["path"]] * len(examples)
        starts_out += [float(start) for start in starts]
    if skipped:
        log.warning("%d %s-split files could not be used for %s (first: %s: %s)",
                    len(skipped), split, purpose, skipped[0].path, skipped[0].reason)
    if not labels:
        sources = {row["source"] for row in manifest}
        raise EdgeError(
            f"no {split}-split audio could be read for {purpose}: the checkpoint's manifest "
            f"points to folders that are not on this machine.{missing_roots_hint(root_of, sources)}"
        )
    if max_windows:
        audio, labels = audio[:max_windows], labels[:max_windows]
        paths, starts_out = paths[:max_windows], starts_out[:max_windows]
    log.info("%s: %d windows from the %s split", purpose, len(labels), split)
    return LabelledWindows(np.stack(audio).astype(np.float32), np.asarray(labels, dtype=int),
                           paths, starts_out, skipped)

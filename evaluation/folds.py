"""Folds over recording groups, and the train / val / test manifest of one fold.

Every recording group (``group`` column of the split manifest, so ``dataset.group_regex``
holds) lands in exactly one test fold. Groups are dealt to folds per label, so each fold tests
every species in proportion. The fold's other groups are the training part: a share goes to
validation (early stopping), the rest trains; in few-shot mode only N groups per species are
kept (the rest of the training part is unused), validation included.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import pandas as pd

from datasets.bird_dataset import NO_BIRDS
from datasets.split_manifest import MANIFEST_COLUMNS, DatasetError

log = logging.getLogger(__name__)


def group_labels(manifest: pd.DataFrame) -> dict[str, str]:
    """Each group's label: its most common label (ties: alphabetical), as the split does."""
    labels: dict[str, list[str]] = defaultdict(list)
    for group, label in zip(manifest["group"], manifest["label"], strict=True):
        labels[group].append(label)
    return {g: sorted(set(ls), key=lambda lab: (-ls.count(lab), lab))[0]
            for g, ls in labels.items()}


def _rng(seed: int, *parts: object) -> np.random.Generator:
    # Per-label streams: adding a species does not reshuffle the others' folds.
    return np.random.default_rng([seed, *(b for p in parts for b in str(p).encode())])


def assign_folds(manifest: pd.DataFrame, folds: int, seed: int) -> dict[str, int]:
    """Group -> test fold (0..folds-1), stratified by label, deterministic for the seed."""
    if folds < 2:
        raise DatasetError(f"evaluation.folds must be at least 2, got {folds}")
    by_label: dict[str, list[str]] = defaultdict(list)
    for group, label in group_labels(manifest).items():
        by_label[label].append(group)
    fold_of: dict[str, int] = {}
    offset = 0
    for label in sorted(by_label):
        groups = sorted(by_label[label])
        if len(groups) < folds and label != NO_BIRDS:
            log.warning("%s has %d recordings for %d folds: %d folds test none of it",
                        label, len(groups), folds, folds - len(groups))
        order = _rng(seed, "folds", label).permutation(len(groups))
        for rank, index in enumerate(order):
            # Labels start at different folds, so small classes do not all pile into fold 0.
            fold_of[groups[index]] = (rank + offset) % folds
        offset += len(groups)
    return fold_of


def fold_manifest(manifest: pd.DataFrame, fold_of: dict[str, int], fold: int, seed: int,
                  val_fraction: float = 0.15,
                  train_recordings_per_class: int | None = None) -> pd.DataFrame:
    """The manifest of one fold: its groups are test, the others train or val (or unused).

    Validation takes ``val_fraction`` of each label's remaining groups (at least one when
    the label has two or more). With ``train_recordings_per_class=N`` each species keeps only
    N of its remaining groups (validation included); no_birds sources are never thinned.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"evaluation.val_fraction must be in [0, 1), got {val_fraction}")
    if train_recordings_per_class is not None and train_recordings_per_class < 1:
        raise DatasetError("evaluation.train_recordings_per_class must be at least 1 or null, "
                           f"got {train_recordings_per_class}")
    labels = group_labels(manifest)
    split_of: dict[str, str] = {g: "test" for g, f in fold_of.items() if f == fold}
    remaining: dict[str, list[str]] = defaultdict(list)
    for group, label in labels.items():
        if group not in split_of:
            remaining[label].append(group)
    for label in sorted(remaining):
        groups = sorted(remaining[label])
        order = [groups[i] for i in _rng(seed, "train", fold, label).permutation(len(groups))]
        if train_recordings_per_class is not None and label != NO_BIRDS:
            if len(order) < train_recordings_per_class:
                log.warning("Fold %d: %s has only %d training recordings (asked for %d)",
                            fold, label, len(order), train_recordings_per_class)
            order = order[:train_recordings_per_class]
        n_val = int(round(val_fraction * len(order)))
        if val_fraction > 0 and len(order) >= 2:
            n_val = min(max(1, n_val), len(order) - 1)
        for rank, group in enumerate(order):
            split_of[group] = "val" if rank < n_val else "train"
    table = manifest[manifest["group"].isin(split_of)].copy()
    table["split"] = table["group"].map(split_of)
    return table[MANIFEST_COLUMNS].reset_index(drop=True)

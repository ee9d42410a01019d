"""BirdNET's embedding + a linear head fitted on the run's labelled windows, as a teacher.

BirdNET's own output layer is a poor teacher for a short class list: on the dev recordings
it calls 32-76% of the windows of labelled recordings "no target bird", so its logits mostly
teach silence (logit KD from them lowered the student's macro-F1 in every setting measured,
distillation/README.md). A logistic regression on BirdNET's embedding, fitted on the same
few labelled windows the student sees, is a far better classifier of those classes (the
scoreboard's ``birdnet_linear`` row). With ``distillation.teacher_classifier=linear_probe``
that head labels every window without a label (the recordings' other windows, the
unlabelled pool): the student learns from the head's class probabilities there, through the
same soft term as logit distillation (``distillation.alpha``).

The head is fitted on the training split only (never on validation or test windows), on
BirdNET's embedding of each labelled window: the call windows of the species and the no_birds
windows (quiet stretches of the recordings, and no-birds clips such as ESC-50's when their
folder is also one of the unlabelled folders, whose records hold their embeddings).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from birdnet.embedding_head import class_probabilities, fit_linear_head
from birdnet.teacher import EMBEDDING_DIM
from common.errors import ConfigError
from datasets.bird_dataset import PreparedRecording
from datasets.manifest_files import source_file, source_roots
from datasets.no_birds import ESC50
from datasets.unlabelled import unlabelled_key_of, unlabelled_roots
from distillation.datasets.soft_label_dataset import SoftLabelWindowDataset, soft_label_key
from distillation.soft_labels import SoftLabelStore

log = logging.getLogger(__name__)

TEACHER_CLASSIFIERS: tuple[str, ...] = ("birdnet", "linear_probe")
# Floor of a probability turned into a logit: log(0) would be -inf in the soft target.
MIN_PROBABILITY = 1e-6


class ProbeUnavailable(ConfigError):
    """A class has no labelled training window that BirdNET has seen."""


class ProbeTeacher:
    """Class log-probabilities (usable as teacher logits) from BirdNET embeddings."""

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray, n_classes: int,
                 c: float = 1.0, seed: int = 0):
        self.n_classes = int(n_classes)
        self.head = fit_linear_head(embeddings, labels, c, seed)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, n_classes) float32 log-probabilities: softmax of them is the head's output."""
        probs = class_probabilities(self.head, np.asarray(embeddings, np.float32),
                                    self.n_classes)
        return np.log(np.maximum(probs, MIN_PROBABILITY)).astype(np.float32)


def pool_record_key(roots: Mapping[str, Path], pool_roots: Mapping[str, Path], source: str,
                    path: str, store: SoftLabelStore) -> str | None:
    """The stored unlabelled record of a manifest file extraction never labels as such (an
    ESC-50 clip), when its folder is also an unlabelled folder; else None."""
    if source not in roots or not pool_roots:
        return None
    key = unlabelled_key_of(source_file(roots, source, path), pool_roots)
    return key if key is not None and store.has(key) else None


def labelled_embeddings(cfg: DictConfig, train: SoftLabelWindowDataset, sources: dict[str, str],
                        store: SoftLabelStore) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) of the training split's labelled windows that BirdNET has seen.

    Windows of files extraction never labels (ESC-50 clips) take their embedding from the
    file's unlabelled record when its folder is also an unlabelled folder.
    """
    clip_s = train.base.clip_samples / train.base.sample_rate
    roots = source_roots(cfg.dataset)
    pool_roots = unlabelled_roots(cfg.dataset.get("unlabelled_dirs") or [])
    rows, labels = [], []
    for i, example in enumerate(train.examples):
        if train.has_embedding[i]:
            rows.append(train.teacher_embedding[i])
        else:
            key = pool_record_key(roots, pool_roots, sources.get(example.path, "bird"),
                                  example.path, store)
            if key is None:
                continue
            rows.append(store.embedding_for(key, example.start_s, clip_s))
        labels.append(example.label)
    if not rows:
        return np.zeros((0, train.teacher_embedding.shape[1]), np.float32), np.zeros(0, int)
    return np.asarray(rows, np.float32), np.asarray(labels, int)


def no_birds_embeddings(cfg: DictConfig, recordings: Sequence[PreparedRecording],
                        store: SoftLabelStore, clip_s: float) -> np.ndarray:
    """BirdNET's embedding of every no-bird window of the training split.

    The student's own no_birds windows are a sample as large as an average species (a few
    windows in a few-shot run); the probe that labels the whole pool needs the broader
    picture: every quiet stretch of the training recordings and every window of the
    training split's no-bird clips (ESC-50) whose embedding is stored.
    """
    roots = source_roots(cfg.dataset)
    pool_roots = unlabelled_roots(cfg.dataset.get("unlabelled_dirs") or [])
    rows: list[np.ndarray] = []
    for rec in recordings:
        if rec.split != "train":
            continue
        key = soft_label_key(rec.source, rec.path)
        if rec.source == "bird":
            if rec.quiet_starts and key is not None and store.has(key):
                rows.extend(store.embedding_for(key, s, clip_s) for s in rec.quiet_starts)
        elif rec.source == ESC50:
            key = pool_record_key(roots, pool_roots, rec.source, rec.path, store)
            if key is not None:
                rows.extend(store.record(key)["embedding"].astype(np.float32))
    return np.asarray(rows, np.float32).reshape(-1, EMBEDDING_DIM)


def covered_windows(rows: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Which of ``rows`` are also in ``pool``: the same teacher window, bit for bit.

    The student's sampled no_birds windows are drawn from the windows
    :func:`no_birds_embeddings` returns (both read the same stored record rows), so the probe
    counts each of them once, not once per list.
    """
    seen = {row.tobytes() for row in np.asarray(pool, np.float32)}
    return np.fromiter((row.tobytes() in seen for row in np.asarray(rows, np.float32)),
                       dtype=bool, count=len(rows))


def fit_probe_teacher(cfg: DictConfig, train: SoftLabelWindowDataset, sources: dict[str, str],
                      store: SoftLabelStore, class_names: Sequence[str],
                      recordings: Sequence[PreparedRecording] = ()) -> ProbeTeacher:
    """The linear head on BirdNET's embedding of the training split's labelled windows, and
    of every no-bird window of its recordings and clips."""
    embeddings, labels = labelled_embeddings(cfg, train, sources, store)
    clip_s = train.base.clip_samples / train.base.sample_rate
    extra = no_birds_embeddings(cfg, recordings, store, clip_s)
    if len(extra):
        no_birds = len(class_names) - 1
        keep = ~covered_windows(embeddings, extra) | (labels != no_birds)
        embeddings = np.concatenate([embeddings[keep], extra])
        labels = np.concatenate([labels[keep], np.full(len(extra), no_birds)])
    present = set(labels.tolist())
    absent = [name for i, name in enumerate(class_names) if i not in present]
    if absent:
        raise ProbeUnavailable(
            "distillation.teacher_classifier=linear_probe fits a classifier on BirdNET's "
            f"embedding of the labelled training windows, but none is labelled {absent}. "
            "Give each class training audio (for no_birds: recordings with quiet stretches, "
            "or a no-birds folder such as ESC-50's audio/ that is also in "
            "dataset.unlabelled_dirs and --unlabelled_dir)."
        )
    counts = np.bincount(labels, minlength=len(class_names))
    log.info("Linear-probe teacher fitted on %d labelled windows (%s)", len(labels),
             ", ".join(f"{n} {c}" for n, c in zip(class_names, counts, strict=True)))
    return ProbeTeacher(embeddings, labels, len(class_names),
                        float(cfg.distillation.linear_probe_C), int(cfg.seed))


def check_teacher_classifier(name: str) -> str:
    if name not in TEACHER_CLASSIFIERS:
        raise ConfigError(f"distillation.teacher_classifier must be one of "
                          f"{TEACHER_CLASSIFIERS}, got '{name}'")
    return name

"""Training windows with the teacher's logits attached (for distillation losses).

For a student window at offset t of a file, the teacher logits come from the teacher window
that covers it (closest centre; see ``SoftLabelStore.window_index``), in the student's class
order; ``no_birds`` gets the teacher's derived no_birds logit. Windows of files without soft
labels (e.g. ESC-50 clips, which extraction does not label) either stop the run or train on
their hard label only (``has_teacher=False``), as configured.

With ``trust_bird_labels`` (the default), a window whose hard label is a species keeps the
teacher's species logits but has its no_birds logit lowered to the weakest species logit:
the species folder says a bird is there, and a window BirdNET scores low (faint or partial
call) should teach which species it resembles, not that nothing is there. Windows labelled
no_birds keep the teacher's full signal.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from birdnet.teacher import EMBEDDING_DIM
from common.activations import sigmoid
from common.errors import UserError
from datasets.bird_dataset import WindowDataset
from distillation.soft_labels import NO_BIRDS_KEY_PREFIX, SoftLabelStore

log = logging.getLogger(__name__)

MISSING_POLICIES = ("error", "hard_only")


class MissingSoftLabelsError(UserError, ValueError):
    """Windows without teacher logits while the config asks for all of them."""


def soft_label_key(source: str, path: str) -> str | None:
    """The soft-label key of a manifest row, or None for sources extraction never labels."""
    if source == "bird":
        return path
    if source == "no_birds":
        return NO_BIRDS_KEY_PREFIX + path
    return None


class SoftLabelWindowDataset(Dataset):
    """Wraps a ``WindowDataset``; each item also has ``teacher_logits`` and ``has_teacher``."""

    def __init__(self, base: WindowDataset, sources: dict[str, str], store: SoftLabelStore,
                 class_names: Sequence[str], missing: str = "hard_only",
                 trust_bird_labels: bool = True, confidence_threshold: float = 0.0,
                 embeddings: bool = False):
        """``embeddings``: also attach BirdNET's embedding (``teacher_embedding``,
        ``has_embedding``) for embedding distillation; the store must hold them."""
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing soft-label policy must be one of {MISSING_POLICIES}")
        self.base = base
        n = len(base.examples)
        self.teacher_logits = np.zeros((n, len(class_names)), dtype=np.float32)
        self.has_teacher = np.zeros(n, dtype=bool)
        self.embeddings = embeddings
        self.teacher_embedding = np.zeros((n, EMBEDDING_DIM if embeddings else 0), np.float32)
        self.has_embedding = np.zeros(n, dtype=bool)
        clip = base.clip_samples / base.sample_rate
        absent: Counter = Counter()
        for i, example in enumerate(base.examples):
            key = soft_label_key(sources.get(example.path, "bird"), example.path)
            if key is None or not store.has(key):
                absent[example.kind] += 1
                continue
            self.teacher_logits[i] = store.teacher_logits_for(key, example.start_s, clip,
                                                              class_names)
            self.has_teacher[i] = True
            if embeddings:
                self.teacher_embedding[i] = store.embedding_for(key, example.start_s, clip)
                self.has_embedding[i] = True
        if confidence_threshold > 0:
            # A teacher that is sure of nothing (every class's sigmoid below the threshold)
            # has no knowledge to pass on: such windows learn from their hard label alone.
            confidence = sigmoid(self.teacher_logits.max(axis=1))
            unsure = self.has_teacher & (confidence < confidence_threshold)
            self.has_teacher &= ~unsure
            self.unsure_count = int(unsure.sum())
            if self.unsure_count:
                log.info("%d windows below teacher confidence %.2f train on hard labels only",
                         self.unsure_count, confidence_threshold)
        if trust_bird_labels:
            no_birds = len(class_names) - 1
            bird = self.has_teacher & (np.asarray(base.labels()) != no_birds)
            species = self.teacher_logits[bird, :no_birds]
            self.teacher_logits[bird, no_birds] = np.minimum(
                self.teacher_logits[bird, no_birds], species.min(axis=1)
            )
        self.missing_counts = dict(absent)
        if absent:
            message = (f"{sum(absent.values())} of {n} windows have no soft labels "
                       f"(by kind: {dict(absent)})")
            if missing == "error":
                raise MissingSoftLabelsError(
                    message + f" in '{store.root}'. Run extract_soft_labels.py on this dataset "
                    "(with --no_birds_dir for pre-generated no-birds samples), or set "
                    "dataset.missing_soft_labels=hard_only to train those on hard labels."
                )
            log.warning("%s; they train on their hard label only", message)

    @property
    def examples(self):
        return self.base.examples

    def labels(self) -> list[int]:
        return self.base.labels()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        item["teacher_logits"] = torch.from_numpy(self.teacher_logits[i])
        item["has_teacher"] = bool(self.has_teacher[i])
        if self.embeddings:
            item["teacher_embedding"] = torch.from_numpy(self.teacher_embedding[i])
            item["has_embedding"] = bool(self.has_embedding[i])
        return item

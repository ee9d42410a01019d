"""Windows that carry teacher targets only, and the training set that adds them.

Hard labels exist only for the detected call windows of the species folders (and no_birds
windows); BirdNET labels every window. :class:`TeacherWindowDataset` holds, as
``label == -1`` items, every teacher window of

- every labelled *training* recording of the run (``distillation.all_windows``), and
- every file of ``dataset.unlabelled_dirs`` (already filtered of the run's validation and
  test files by ``datasets.unlabelled``),

with BirdNET's logits (student class order) and, when asked, its embedding. When the soft
labels hold augmented views (``extract_soft_labels.py --views K``), an item is replaced with
probability ``view_prob`` by one of its window's views, rebuilt from the stored recipe at the
student's sample rate and paired with the teacher's output on that very mix. Views whose
partner or background file is not on this run's training side are never drawn.

Only the training split gets these windows: validation and test keep their labelled windows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from common.activations import sigmoid
from datasets.audio_cache import DecodedAudioCache
from distillation.losses.embedding import IGNORE_LABEL
from distillation.soft_labels import SoftLabelStore
from distillation.views import cut_window, mix_view, read_views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherWindow:
    key: str  # soft-label key of the file
    row: int  # its teacher window


class TeacherWindowDataset(Dataset):
    """Teacher-only windows (``label`` -1) with teacher logits and optionally embeddings."""

    def __init__(
        self,
        keys: Sequence[str],
        cache_keys: dict[str, str],
        store: SoftLabelStore,
        cache: DecodedAudioCache,
        class_names: Sequence[str],
        clip_duration: float,
        embeddings: bool = False,
        view_prob: float = 0.0,
        confidence_threshold: float = 0.0,
        probe: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        """``keys``: files whose windows to add; ``cache_keys``: soft-label key -> decoded
        audio of every file on the training side (views may only borrow from those).
        ``probe``: BirdNET embeddings (n, 1024) -> class logits (n, C) that replace BirdNET's
        own class logits as the soft target (distillation/probe_teacher.py)."""
        self.store = store
        self.cache = cache
        self.cache_keys = dict(cache_keys)
        self.class_names = list(class_names)
        self.clip_duration = float(clip_duration)
        self.embeddings = embeddings
        self.confidence_threshold = float(confidence_threshold)
        self.probe = probe
        self.items: list[TeacherWindow] = []
        # With a probe, its logits for every window of every file, computed once here (one
        # batched call per file, not one per item in the loader).
        self._probe_logits: dict[str, np.ndarray] = {}
        for key in keys:
            if store.has(key) and key in self.cache_keys:
                self.items.extend(TeacherWindow(key, r) for r in range(len(store.windows(key)[0])))
                if probe is not None:
                    self._probe_logits[key] = probe(store.record(key)["embedding"])
        # Usable views per item: index into the file's view record.
        self.view_prob = float(view_prob) if store.view_info else 0.0
        self._views: dict[str, dict[str, np.ndarray]] = {}
        self._view_probe_logits: dict[str, np.ndarray] = {}
        self._usable: dict[tuple[str, int], np.ndarray] = {}
        if self.view_prob > 0:
            self._index_views(sorted({item.key for item in self.items}))

    def _index_views(self, keys: list[str]) -> None:
        total = usable = 0
        for key in keys:
            views = read_views(self.store.root, key)
            if views is None:
                continue
            self._views[key] = views
            if self.probe is not None:  # once per file, like the plain windows' probe logits
                self._view_probe_logits[key] = self.probe(views["embedding"])
            ok = np.asarray([
                (not p or p in self.cache_keys) and (not b or b in self.cache_keys)
                for p, b in zip(views["partner_key"], views["background_key"], strict=True)
            ], dtype=bool)
            total += len(ok)
            usable += int(ok.sum())
            for row in np.unique(views["window"]):
                chosen = np.flatnonzero((views["window"] == row) & ok)
                if len(chosen):
                    self._usable[(key, int(row))] = chosen
        log.info("Views: %d of %d usable (the others borrow audio held out of training)",
                 usable, total)

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> list[int]:
        return [IGNORE_LABEL] * len(self.items)

    def _audio_of(self, key: str) -> np.ndarray:
        return self.cache.get(self.cache_keys[key])

    def _targets(self, arrays: dict[str, np.ndarray], row: int,
                 probe_logits: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if probe_logits is not None:
            logits = probe_logits[row]
        else:
            columns = self.store.class_columns(self.class_names)
            logits = np.where(columns >= 0,
                              arrays["target_logits"][row, np.maximum(columns, 0)],
                              arrays["no_birds_logit"][row]).astype(np.float32)
        embedding = (arrays["embedding"][row].astype(np.float32) if self.embeddings
                     else np.zeros(0, np.float32))
        return logits, embedding

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        usable = self._usable.get((item.key, item.row))
        if usable is not None and torch.rand(()).item() < self.view_prob:
            views = self._views[item.key]
            view = int(usable[int(torch.randint(len(usable), ()).item())])
            audio = mix_view(self._audio_of, self.cache.sample_rate, self.clip_duration,
                             item.key, views, view)
            logits, embedding = self._targets(views, view,
                                              self._view_probe_logits.get(item.key))
        else:
            start = float(self.store.windows(item.key)[0][item.row])
            audio = cut_window(self._audio_of(item.key), self.cache.sample_rate,
                               self.clip_duration, start)
            logits, embedding = self._targets(self.store.record(item.key), item.row,
                                              self._probe_logits.get(item.key))
        confident = float(sigmoid(logits.max())) >= self.confidence_threshold
        out = {
            # A copy: the cache is a read-only memory map.
            "audio": torch.from_numpy(np.array(audio, dtype=np.float32)),
            "label": IGNORE_LABEL,
            "index": i,
            "teacher_logits": torch.from_numpy(logits),
            "has_teacher": bool(confident),
        }
        if self.embeddings:
            out["teacher_embedding"] = torch.from_numpy(embedding)
            out["has_embedding"] = True
        return out


class CombinedTrainingSet(Dataset):
    """Labelled windows followed by teacher-only windows, one index space.

    ``sampling_weights`` (None: every window equally often) lets the training loader draw
    a set share of each epoch from the labelled side (see :func:`labelled_side_weights`).
    """

    def __init__(self, labelled: Dataset, teacher: TeacherWindowDataset,
                 sampling_weights: torch.Tensor | None = None):
        self.labelled = labelled
        self.teacher = teacher
        self.sampling_weights = sampling_weights

    @property
    def examples(self):
        return self.labelled.examples

    def labels(self) -> list[int]:
        return [*self.labelled.labels(), *self.teacher.labels()]

    def __len__(self) -> int:
        return len(self.labelled) + len(self.teacher)

    def __getitem__(self, i: int) -> dict:
        n = len(self.labelled)
        item = self.labelled[i] if i < n else self.teacher[i - n]
        item["index"] = i
        return item


def labelled_side_weights(n_labelled: int, teacher: TeacherWindowDataset,
                          own_keys: set[str], share: float) -> torch.Tensor | None:
    """Per-window draw weights so that ``share`` of the draws come from the labelled side.

    The labelled side is the labelled windows (indices ``0..n_labelled-1`` of a
    :class:`CombinedTrainingSet`) and the teacher windows of the run's own labelled training
    files (``own_keys``); the rest is the unlabelled pool. Within each side every window is
    equally likely. With a large pool and a few labelled recordings, uniform drawing leaves
    the species recordings a few percent of each epoch. None when either side is empty.
    """
    own = np.ones(n_labelled + len(teacher), dtype=bool)
    own[n_labelled:] = [item.key in own_keys for item in teacher.items]
    n_own, n_pool = int(own.sum()), int((~own).sum())
    if n_own == 0 or n_pool == 0:
        return None
    weights = np.where(own, share / n_own, (1.0 - share) / n_pool)
    return torch.as_tensor(weights, dtype=torch.double)

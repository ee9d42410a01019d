"""Per-class loss weights: ``loss.class_weights: null | "auto" | [w0, w1, ...]``.

Formulas (n_c = training windows of class c, N = sum_c n_c):

``inverse_frequency`` (``loss.alpha_scaling`` = a)
    w_c ∝ (1 / n_c)^a;  a = 1 is plain inverse frequency, a = 0.5 its square root (milder),
    a = 0 no weighting.
``effective_number`` (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
Samples"), beta in [0, 1)
    E_c = (1 - beta^n_c) / (1 - beta),  w_c ∝ 1 / E_c = (1 - beta) / (1 - beta^n_c)
    beta -> 1 approaches inverse frequency, beta = 0 gives equal weights; it saturates for
    large classes, where extra near-duplicate windows add little new information.

Normalisation: ``sum_c w_c * n_c / N = 1``, i.e. the average weight over training windows is
1. The loss of an unweighted run and of a weighted one then have the same scale, so the
learning rate needs no retuning when weights are switched on.

A class with no training window (n_c = 0) cannot be weighted by its frequency; it gets the
largest weight among the present classes (with a warning). Weight 0 would silently switch
the class off, and an infinite weight would blow the loss up if a window of it ever turns up.

``auto`` counts labels from the split manifest (or the per-window labels of the training
split): no audio is decoded, so it is instant at any dataset size. ``loss.use_fast_sampling``
with ``loss.weight_calculation_samples`` = S keeps its meaning: count a deterministic random
sample of S labels (seeded) and scale the counts by N / S; it is rarely needed, since counting
labels is already fast. ``loss.sampling_strategy``: ``random`` draws the S labels uniformly,
so a rare class can be missed entirely; ``stratified`` (default) draws from each class its
share of S (at least one label per class present), so every class keeps its proportion.
The result is cached (``weight_cache.py``) unless disabled:
``loss.cache_max_age_hours``, ``loss.force_recalculate`` and ``training.save_weight_cache``
map to ``cache_max_age_hours``, ``force_recalculate`` and ``save_cache`` here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from distillation.losses.weight_cache import cache_key, cache_path, load_cached, save_cached

log = logging.getLogger(__name__)

WEIGHT_METHODS: tuple[str, ...] = ("inverse_frequency", "effective_number")
SAMPLING_STRATEGIES: tuple[str, ...] = ("random", "stratified")


class ClassWeightError(UserError, ValueError):
    """``loss.class_weights`` (or the labels behind ``auto``) cannot give valid weights."""


def _counts_array(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ClassWeightError(f"Class counts must be a non-empty 1-D list, got {counts!r}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ClassWeightError(f"Class counts must be finite and >= 0, got {values.tolist()}")
    if not (values > 0).any():
        raise ClassWeightError("Every class count is 0: there are no training labels to weight")
    return values


def _normalise(raw: np.ndarray, counts: np.ndarray) -> torch.Tensor:
    """Scale ``raw`` (valid where n_c > 0) so sum_c w_c n_c / N = 1; fill absent classes."""
    present = counts > 0
    weights = np.zeros_like(raw)
    weights[present] = raw[present] / (raw[present] * counts[present]).sum() * counts.sum()
    if not present.all():
        missing = np.flatnonzero(~present).tolist()
        log.warning(
            "Classes %s have no training windows; giving them the largest weight of the "
            "other classes",
            missing,
        )
        weights[~present] = weights[present].max()
    return torch.tensor(weights, dtype=torch.float32)


def inverse_frequency_weights(
    counts: Sequence[float] | np.ndarray, alpha_scaling: float = 1.0
) -> torch.Tensor:
    """w_c ∝ (1 / n_c)^alpha_scaling, mean weight over windows 1 (module docstring)."""
    if not float(alpha_scaling) >= 0.0:
        raise ClassWeightError(f"loss.alpha_scaling must be >= 0, got {alpha_scaling}")
    values = _counts_array(counts)
    raw = np.ones_like(values)
    present = values > 0
    raw[present] = values[present] ** -float(alpha_scaling)
    return _normalise(raw, values)


def effective_number_weights(
    counts: Sequence[float] | np.ndarray, beta: float = 0.999
) -> torch.Tensor:
    """w_c ∝ (1 - beta) / (1 - beta^n_c) (Cui et al. 2019), mean weight over windows 1."""
    if not 0.0 <= float(beta) < 1.0:
        raise ClassWeightError(f"Effective-number beta must be in [0, 1), got {beta}")
    values = _counts_array(counts)
    raw = np.ones_like(values)
    present = values > 0
    if beta > 0.0:
        # 1 - beta^n = -expm1(n * log(beta)): exact even for beta close to 1.
        effective = -np.expm1(values[present] * math.log(beta)) / (1.0 - beta)
        raw[present] = 1.0 / effective
    return _normalise(raw, values)


def label_indices(labels: Sequence | np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Labels as int64 class indices, checked against the class list.

    Accepts class names or indices, a manifest table (its ``label`` column) or manifest
    records (dicts with a ``label`` key), so a split manifest can be passed as it is.
    """
    if hasattr(labels, "columns"):  # a pandas DataFrame such as the split manifest
        labels = labels["label"]
    items = labels if isinstance(labels, np.ndarray) else list(labels)
    if len(items) and isinstance(items[0], Mapping):
        items = [row["label"] for row in items]
    values = np.asarray(items)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if values.dtype.kind in "iu":
        out_of_range = (values < 0) | (values >= len(class_names))
        if out_of_range.any():
            raise ClassWeightError(
                f"Label indices {sorted(set(values[out_of_range].tolist()))[:5]} are outside "
                f"0..{len(class_names) - 1} (classes: {list(class_names)})"
            )
        return values.astype(np.int64)
    if values.dtype.kind in "UOS":
        lookup = {name: i for i, name in enumerate(class_names)}
        unknown = sorted({str(v) for v in values.tolist()} - lookup.keys())
        if unknown:
            raise ClassWeightError(
                f"Labels {unknown[:5]} are not in the class list {list(class_names)}"
            )
        return np.fromiter((lookup[str(v)] for v in values.tolist()), np.int64, values.size)
    raise ClassWeightError(f"Labels must be class names or indices, got dtype {values.dtype}")


def _stratified_quota(sizes: np.ndarray, samples: int) -> np.ndarray:
    """Labels to draw per class: its share of ``samples`` (largest remainder), at least one
    for every class present, never more than it has."""
    quota = samples * sizes / sizes.sum()
    take = np.floor(quota).astype(np.int64)
    remainder_order = np.argsort(-(quota - take), kind="stable")
    take[remainder_order[: samples - int(take.sum())]] += 1
    return np.minimum(np.maximum(take, 1), sizes)


def check_sampling_strategy(strategy: str) -> None:
    if strategy not in SAMPLING_STRATEGIES:
        raise ClassWeightError(
            f"loss.sampling_strategy must be one of {SAMPLING_STRATEGIES}, got '{strategy}'")


def sample_labels(indices: np.ndarray, samples: int, seed: int, strategy: str) -> np.ndarray:
    """About ``samples`` of the label ``indices`` (see the module doc). A stratified sample
    is fixed by the class sizes alone (which windows of a class are drawn cannot change a
    count), so only ``random`` uses the seed."""
    check_sampling_strategy(strategy)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        return indices[rng.choice(indices.size, size=samples, replace=False)]
    classes, sizes = np.unique(indices, return_counts=True)
    return np.repeat(classes, _stratified_quota(sizes, samples))


def count_labels(
    labels: Sequence | np.ndarray,
    class_names: Sequence[str],
    use_fast_sampling: bool = False,
    samples: int = 10_000,
    seed: int = 0,
    sampling_strategy: str = "stratified",
) -> np.ndarray:
    """Windows per class (float64, class order), optionally from a seeded sample scaled to N."""
    indices = label_indices(labels, class_names)
    n_classes = len(class_names)
    if use_fast_sampling and int(samples) > 0 and indices.size > int(samples):
        picked = sample_labels(indices, int(samples), seed, sampling_strategy)
        scale = indices.size / picked.size
        return np.bincount(picked, minlength=n_classes).astype(np.float64) * scale
    return np.bincount(indices, minlength=n_classes).astype(np.float64)


def manual_weights(values: Sequence[float], class_names: Sequence[str]) -> torch.Tensor:
    """A user-given list, checked: one finite, positive number per class, in class order."""
    items = list(values)
    if len(items) != len(class_names):
        raise ClassWeightError(
            f"loss.class_weights has {len(items)} values but there are {len(class_names)} "
            f"classes; expected {len(class_names)} weights in this order: {list(class_names)}"
        )
    try:
        weights = [float(v) for v in items if not isinstance(v, bool | str)]
    except (TypeError, ValueError) as error:
        raise ClassWeightError(f"loss.class_weights must be numbers, got {items}") from error
    if len(weights) != len(items) or not all(math.isfinite(w) and w > 0 for w in weights):
        raise ClassWeightError(
            f"loss.class_weights must be finite numbers > 0, got {items} "
            f"(classes: {list(class_names)})"
        )
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class ClassWeights:
    """What ``resolve_class_weights`` decided, for the loss and for the run log."""

    weights: torch.Tensor | None
    source: str  # "none" | "manual" | "computed" | "cache"
    counts: np.ndarray | None = None
    cache_path: Path | None = None

    @property
    def cache_hit(self) -> bool:
        return self.source == "cache"


def compute_weights(
    counts: np.ndarray, method: str, alpha_scaling: float, beta: float
) -> torch.Tensor:
    if method == "inverse_frequency":
        return inverse_frequency_weights(counts, alpha_scaling)
    if method == "effective_number":
        return effective_number_weights(counts, beta)
    raise ClassWeightError(f"Class-weight method must be one of {WEIGHT_METHODS}, got '{method}'")


def _settings(
    class_names: Sequence[str],
    method: str,
    alpha_scaling: float,
    beta: float,
    use_fast_sampling: bool,
    samples: int,
    seed: int,
    sampling_strategy: str = "stratified",
) -> dict[str, object]:
    """Every setting that changes the weights, and nothing else (so the cache can hit)."""
    settings: dict[str, object] = {"class_names": list(class_names), "method": method}
    if method == "inverse_frequency":
        settings["alpha_scaling"] = float(alpha_scaling)
    else:
        settings["beta"] = float(beta)
    settings["use_fast_sampling"] = bool(use_fast_sampling)
    if use_fast_sampling:
        settings.update(samples=int(samples), seed=int(seed), strategy=sampling_strategy)
    return settings


def resolve_class_weights(
    spec: str | Sequence[float] | None,
    *,
    labels: Sequence | np.ndarray | None,
    class_names: Sequence[str],
    alpha_scaling: float = 1.0,
    method: str = "inverse_frequency",
    beta: float = 0.999,
    cache_dir: str | Path | None = None,
    cache_max_age_hours: float | None = 24.0,
    force_recalculate: bool = False,
    save_cache: bool = True,
    use_fast_sampling: bool = False,
    samples: int = 10_000,
    seed: int = 0,
    sampling_strategy: str = "stratified",
) -> ClassWeights:
    """Turn ``loss.class_weights`` into a weight tensor (or None), using the cache for ``auto``.

    ``labels`` are the training split's labels (names or indices; only needed for ``auto``).
    ``cache_dir=None`` disables the cache. An existing, fresh cache entry is reused unless
    ``force_recalculate``; a new entry is written only if ``save_cache``.
    """
    if spec is None:
        return ClassWeights(None, "none")
    if isinstance(spec, str):
        if spec.strip().lower() != "auto":
            raise ClassWeightError(
                f"loss.class_weights must be null, 'auto' or a list of {len(class_names)} "
                f"numbers (order: {list(class_names)}); got '{spec}'"
            )
    elif isinstance(spec, Mapping):
        raise ClassWeightError(f"loss.class_weights must be null, 'auto' or a list, got {spec}")
    else:
        return ClassWeights(manual_weights(spec, class_names), "manual")

    if method not in WEIGHT_METHODS:
        raise ClassWeightError(f"Class-weight method must be one of {WEIGHT_METHODS}: '{method}'")
    if labels is None:
        raise ClassWeightError("loss.class_weights='auto' needs the training labels")
    indices = label_indices(labels, class_names)
    if indices.size == 0:
        raise ClassWeightError("loss.class_weights='auto' but the training split has no labels")
    check_sampling_strategy(sampling_strategy)
    settings = _settings(class_names, method, alpha_scaling, beta, use_fast_sampling, samples,
                         seed, sampling_strategy)
    path, key = None, ""
    if cache_dir is not None:
        key = cache_key(indices, settings)
        path = cache_path(cache_dir, key)
        entry = None if force_recalculate else load_cached(path, key, cache_max_age_hours)
        if entry is not None:
            log.info("Class weights loaded from cache %s", path)
            weights = torch.tensor(entry["weights"], dtype=torch.float32)
            return ClassWeights(weights, "cache", np.asarray(entry["counts"]), path)

    counts = count_labels(indices, class_names, use_fast_sampling, samples, seed,
                          sampling_strategy)
    weights = compute_weights(counts, method, alpha_scaling, beta)
    if path is not None and save_cache:
        save_cached(path, key, weights.tolist(), counts.tolist(), list(class_names), settings)
        log.info("Class weights saved to cache %s", path)
    return ClassWeights(weights, "computed", counts, path)


def format_class_weights(result: ClassWeights, class_names: Sequence[str]) -> str:
    """A small table for ``training.log_class_weights``: class, windows, weight."""
    if result.weights is None:
        return "class weights: none"
    lines = [f"class weights ({result.source}):"]
    width = max(len(name) for name in class_names)
    for i, name in enumerate(class_names):
        count = "" if result.counts is None else f"{result.counts[i]:>10.0f}"
        lines.append(f"  {name:<{width}} {count} {float(result.weights[i]):8.4f}")
    return "\n".join(lines)

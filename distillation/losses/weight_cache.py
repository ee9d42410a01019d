"""On-disk cache for automatically computed class weights.

The cache lives outside the per-run folder (the caller passes e.g. ``.cache/class_weights/``)
and is keyed by *content*, not by run or time: the key is a sha256 over the training labels
(as class indices, so names or indices give the same key), the class list and every setting
that changes the result. A new run on the same manifest therefore hits it, and any change to
the labels or settings misses it. Counting labels is instant anyway; the cache exists so the
weights of a run can be traced and reused exactly (``training.save_weight_cache``).

File: ``<cache_dir>/class_weights_<key[:20]>.json`` with ``key``, ``created_unix``,
``weights``, ``counts``, ``class_names`` and ``settings``; written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from common.file_io import write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(label_indices: np.ndarray, settings: Mapping[str, object]) -> str:
    """sha256 over the cache version, the JSON-encoded settings and the label indices."""
    digest = hashlib.sha256()
    header = {"version": CACHE_VERSION, "settings": dict(settings)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(label_indices, dtype="<i8").tobytes())
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"class_weights_{key[:20]}.json"


def load_cached(
    path: Path, key: str, max_age_hours: float | None, now: float | None = None
) -> dict | None:
    """The cached entry if it exists, matches ``key`` and is younger than ``max_age_hours``.

    ``max_age_hours=None`` never expires; ``<= 0`` always recomputes. An unreadable file is
    ignored (with a warning) and will be overwritten.
    """
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        created = float(entry["created_unix"])
        if entry["key"] != key or not isinstance(entry["weights"], list):
            return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("Ignoring unreadable class-weight cache %s (%s)", path, error)
        return None
    age_hours = ((time.time() if now is None else now) - created) / 3600.0
    if max_age_hours is not None and not 0.0 <= age_hours < float(max_age_hours):
        log.info(
            "Class-weight cache %s is %.1f h old (max %s h): recomputing",
            path,
            age_hours,
            max_age_hours,
        )
        return None
    return entry


def save_cached(
    path: Path,
    key: str,
    weights: list[float],
    counts: list[float],
    class_names: list[str],
    settings: Mapping[str, object],
) -> Path:
    now = time.time()
    entry = {
        "key": key,
        "created_unix": now,
        "created": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "class_names": class_names,
        "weights": weights,
        "counts": counts,
        "settings": dict(settings),
    }
    return write_json_atomic(entry, path)

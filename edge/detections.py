"""Window confidences -> detections, with per-class thresholds.

A detection is one window (or, with merging, one run of overlapping windows) in which a
species' confidence reaches its threshold. ``no_birds`` is a class of the model, never a
detection. Several species may be detected in one window when their thresholds allow it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import EdgeError

DETECTION_COLUMNS: tuple[str, ...] = ("file", "start", "end", "species", "confidence")


@dataclass(frozen=True)
class Detection:
    file: str
    start: float
    end: float
    species: str
    confidence: float

    def row(self) -> dict[str, object]:
        return {
            "file": self.file,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "species": self.species,
            "confidence": round(self.confidence, 4),
        }


def _check_value(name: str, value: float, where: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise EdgeError(f"threshold for {name} in {where} must be within [0, 1], got {value}")
    return value


def _parse_pairs(text: str) -> dict[str, float]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise EdgeError(f"--class_thresholds item {item!r} is not Species=value")
        try:
            pairs[name.strip()] = float(value)
        except ValueError:
            raise EdgeError(f"--class_thresholds: {value!r} for {name} is not a number") from None
    return pairs


def _read_file(path: Path) -> dict[str, float]:
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise EdgeError(f"{path} must hold a JSON object {{species: threshold}}")
            return {str(k): float(v) for k, v in data.items()}
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, ValueError, TypeError) as error:
        raise EdgeError(f"cannot read class thresholds from {path}: {error}") from error
    if rows and rows[0] and rows[0][0].strip().lower() in ("species", "class", "name"):
        rows = rows[1:]  # header line
    try:
        return {row[0].strip(): float(row[1]) for row in rows if row and row[0].strip()}
    except (IndexError, ValueError) as error:
        raise EdgeError(f"{path}: each line must be species,threshold ({error})") from error


def parse_class_thresholds(spec: str | None, species: Sequence[str]) -> dict[str, float]:
    """``Species=0.3,Other=0.6``, or a ``.json`` object / ``.csv`` (species,threshold) file."""
    if not spec:
        return {}
    path = Path(spec)
    where = str(path) if path.suffix.lower() in (".json", ".csv", ".txt") else "--class_thresholds"
    if where != "--class_thresholds":
        if not path.is_file():
            raise EdgeError(f"class thresholds file not found: {path}")
        values = _read_file(path)
    else:
        values = _parse_pairs(spec)
    unknown = sorted(set(values) - set(species))
    if unknown:
        raise EdgeError(
            f"{where} names {unknown}, which this model does not detect; its species are "
            f"{list(species)}"
        )
    return {name: _check_value(name, value, where) for name, value in values.items()}


def threshold_vector(species: Sequence[str], defaults: dict[str, float],
                     threshold: float | None, per_class: dict[str, float]) -> np.ndarray:
    """Per-species thresholds: the model's defaults, overridden by ``threshold`` (all
    species), overridden by ``per_class``."""
    if threshold is not None:
        _check_value("all species", threshold, "--threshold")
    values = []
    for name in species:
        value = defaults.get(name, 0.5) if threshold is None else threshold
        values.append(per_class.get(name, value))
    return np.asarray(values, dtype=np.float32)


def window_detections(file: str, starts: Sequence[float], ends: Sequence[float],
                      probabilities: np.ndarray, species: Sequence[str],
                      thresholds: np.ndarray) -> list[Detection]:
    """Detections of each window, in time order then by falling confidence.

    ``probabilities`` is (n_windows, n_species + 1) with ``no_birds`` last (ignored).
    """
    species_probs = probabilities[:, : len(species)]
    hits = species_probs >= thresholds[None, :]
    found = []
    for w, c in zip(*np.nonzero(hits), strict=True):
        found.append(Detection(file, float(starts[w]), float(ends[w]), species[c],
                               float(species_probs[w, c])))
    return sorted(found, key=lambda d: (d.start, -d.confidence))


def merge_consecutive(detections: Iterable[Detection], max_gap_s: float = 0.0) -> list[Detection]:
    """Join detections of one species in one file whose windows overlap or are at most
    ``max_gap_s`` apart; the merged span keeps the highest confidence."""
    merged: list[Detection] = []
    open_by_key: dict[tuple[str, str], int] = {}
    for det in sorted(detections, key=lambda d: (d.file, d.start)):
        key = (det.file, det.species)
        i = open_by_key.get(key)
        if i is not None and det.start <= merged[i].end + max_gap_s:
            prev = merged[i]
            merged[i] = Detection(det.file, prev.start, max(prev.end, det.end), det.species,
                                  max(prev.confidence, det.confidence))
            continue
        open_by_key[key] = len(merged)
        merged.append(det)
    return sorted(merged, key=lambda d: (d.file, d.start, -d.confidence))

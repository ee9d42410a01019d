"""From window scores to one decision per file, the same rule for the student and BirdNET.

Per file, each species' score is the max (or mean) of its window scores. The file's
no_birds score is the model's own no_birds signal: for the student (which has a no_birds
output) the min (or mean) of its window no_birds probabilities, since one confident bird
window makes the file a bird file; for BirdNET (independent sigmoids, no such output)
``1 - best species score``. The prediction is ``no_birds`` when that score beats the best
species or the best species score is below the confidence threshold, else the best species.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

AGGREGATIONS = ("max", "mean")


def aggregate(window_scores: np.ndarray, how: str) -> np.ndarray:
    """(n_windows, n_species) -> (n_species,)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    return window_scores.max(axis=0) if how == "max" else window_scores.mean(axis=0)


def aggregate_no_birds(window_no_birds: np.ndarray, how: str) -> float:
    """A file is no_birds only if every window is: min under max-aggregation, else the mean."""
    return float(window_no_birds.min() if how == "max" else window_no_birds.mean())


def decide(species_scores: np.ndarray, threshold: float,
           no_birds_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """(n_files, n_species) -> predicted class index, confidence, class probabilities.

    Index ``n_species`` is no_birds; without ``no_birds_scores`` it is 1 - best species score.
    """
    species_scores = np.atleast_2d(species_scores)
    n_species = species_scores.shape[1]
    best = species_scores.argmax(axis=1)
    best_score = species_scores.max(axis=1)
    if no_birds_scores is None:
        no_birds_scores = 1.0 - best_score
    no_birds_scores = np.asarray(no_birds_scores, dtype=float)
    no_birds = (best_score < threshold) | (no_birds_scores > best_score)
    predicted = np.where(no_birds, n_species, best)
    confidence = np.where(no_birds, no_birds_scores, best_score)
    probabilities = np.concatenate([species_scores, no_birds_scores[:, None]], axis=1)
    return predicted, confidence, probabilities


def predictions_table(files: Sequence[str], labels: Sequence[str], class_names: Sequence[str],
                      species_scores: np.ndarray, threshold: float,
                      n_windows: Sequence[int],
                      no_birds_scores: np.ndarray | None = None) -> pd.DataFrame:
    predicted, confidence, probabilities = decide(species_scores, threshold, no_birds_scores)
    table = pd.DataFrame({
        "file": list(files),
        "label": list(labels),
        "predicted": [class_names[i] for i in predicted],
        "confidence": confidence.round(6),
        "n_windows": list(n_windows),
    })
    for i, name in enumerate(class_names):
        table[f"prob_{name}"] = probabilities[:, i].round(6)
    return table

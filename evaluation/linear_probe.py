"""BirdNET embeddings + a linear head: BirdNET-Analyzer's custom-classifier baseline.

A user with a few recordings per species can train a linear classifier on BirdNET's 1024-d
embedding (BirdNET-Analyzer's "train custom classifier" workflow). This is that baseline:
multinomial logistic regression on standardised embeddings of the same labelled windows the
student learns from (detected call windows of the training recordings, no_birds windows),
scored per file with the student's own aggregation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from benchmark.scoring import aggregate, aggregate_no_birds, predictions_table
from birdnet.embedding_head import class_probabilities, fit_linear_head
from datasets.bird_dataset import WindowExample
from evaluation.birdnet_windows import BirdNetWindowCache

log = logging.getLogger(__name__)

__all__ = ["class_probabilities", "fit_linear_head", "linear_head_predictions",
           "window_embeddings"]


def window_embeddings(examples: Sequence[WindowExample], files: dict[str, str],
                      cache: BirdNetWindowCache, clip_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) of labelled windows: each takes the BirdNET window covering it.

    ``files`` maps an example's manifest path to its audio file; windows of files BirdNET
    could not read are left out.
    """
    features, labels = [], []
    for example in examples:
        audio_path = files.get(example.path)
        if audio_path is None:
            continue
        outputs = cache.get(audio_path)
        features.append(outputs.embeddings[outputs.nearest(example.start_s, clip_s)])
        labels.append(example.label)
    if not features:
        return np.zeros((0, 1024), np.float32), np.zeros(0, int)
    return np.asarray(features, np.float32), np.asarray(labels, int)


def linear_head_predictions(head: Pipeline, files: Sequence[str], labels: Sequence[str],
                            cache: BirdNetWindowCache, class_names: Sequence[str],
                            aggregation: str, threshold: float) -> pd.DataFrame:
    """File-level predictions, aggregated as the student's (species max, no_birds min)."""
    species, no_birds, counts = [], [], []
    for file in files:
        window_probs = class_probabilities(head, cache.get(file).embeddings, len(class_names))
        species.append(aggregate(window_probs[:, :-1], aggregation))
        no_birds.append(aggregate_no_birds(window_probs[:, -1], aggregation))
        counts.append(len(window_probs))
    scores = np.array(species) if species else np.zeros((0, len(class_names) - 1))
    return predictions_table([str(Path(f)) for f in files], list(labels), class_names, scores,
                             threshold, counts, np.array(no_birds))

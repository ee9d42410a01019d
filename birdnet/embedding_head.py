"""A linear classifier on BirdNET's 1024-d embedding, fitted on a few labelled windows.

This is BirdNET-Analyzer's "train custom classifier" idea: BirdNET's embedding already
separates species, so a logistic regression on it learns a new class list from a handful of
recordings. The scoreboard uses it as a baseline (``evaluation/linear_probe.py``) and
distillation can use it as the teacher of windows without a label
(``distillation/probe_teacher.py``).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def fit_linear_head(embeddings: np.ndarray, labels: np.ndarray, c: float = 1.0,
                    seed: int = 0) -> Pipeline:
    """Standardise, then logistic regression with balanced class weights (few-shot classes
    are small, and no_birds is often the largest)."""
    head = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed),
    )
    return head.fit(embeddings, labels)


def class_probabilities(head: Pipeline, embeddings: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities; a class the head never saw gets 0."""
    probs = np.zeros((len(embeddings), n_classes), np.float64)
    if len(embeddings):
        probs[:, head.classes_] = head.predict_proba(np.asarray(embeddings, np.float32))
    return probs

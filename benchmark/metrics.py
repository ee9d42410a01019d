"""Metrics of one model's file-level predictions, and of the student against BirdNET."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from training.metrics import classification_metrics

AGREEMENT = ("both_correct", "only_student", "only_birdnet", "both_wrong")


def model_metrics(table: pd.DataFrame, class_names: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, macro/weighted P/R/F1, per class, ROC-AUC and AP."""
    index = {name: i for i, name in enumerate(class_names)}
    y_true = np.array([index[v] for v in table["label"]], dtype=int)
    y_pred = np.array([index[v] for v in table["predicted"]], dtype=int)
    metrics = classification_metrics(y_true, y_pred, class_names)
    present = sorted(set(y_true))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=present, average=average, zero_division=0
        )
        metrics[f"{average}_precision"], metrics[f"{average}_recall"] = float(p), float(r)
        metrics[f"{average}_f1"] = float(f)
    metrics["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
    probabilities = table[[f"prob_{c}" for c in class_names]].to_numpy(dtype=float)
    metrics.update(threshold_free_metrics(y_true, probabilities))
    return metrics


def threshold_free_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """Macro one-vs-rest ROC-AUC and average precision over classes with both outcomes."""
    aucs, aps = [], []
    for c in range(probabilities.shape[1]):
        positive = y_true == c
        if positive.any() and (~positive).any():
            aucs.append(roc_auc_score(positive, probabilities[:, c]))
            aps.append(average_precision_score(positive, probabilities[:, c]))
    return {
        "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
        "macro_average_precision": float(np.mean(aps)) if aps else None,
    }


def agreement(student: pd.DataFrame, birdnet: pd.DataFrame) -> pd.Series:
    """Per file: both correct, only the student, only BirdNET, or both wrong."""
    s_ok = student["predicted"].to_numpy() == student["label"].to_numpy()
    b_ok = birdnet["predicted"].to_numpy() == birdnet["label"].to_numpy()
    category = np.select(
        [s_ok & b_ok, s_ok & ~b_ok, ~s_ok & b_ok], list(AGREEMENT[:3]), default=AGREEMENT[3]
    )
    return pd.Series(category, index=student.index)


def bootstrap_macro_f1_difference(student: pd.DataFrame, birdnet: pd.DataFrame,
                                  class_names: Sequence[str], samples: int,
                                  seed: int) -> dict:
    """Paired bootstrap over files of macro-F1(student) - macro-F1(BirdNET): 95% interval."""
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[v] for v in student["label"]])
    s = np.array([index[v] for v in student["predicted"]])
    b = np.array([index[v] for v in birdnet["predicted"]])

    def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
        labels = np.unique(truth)
        return float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0))

    observed = macro_f1(y, s) - macro_f1(y, b)
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    for k in range(samples):
        pick = rng.integers(0, len(y), len(y))
        diffs[k] = macro_f1(y[pick], s[pick]) - macro_f1(y[pick], b[pick])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": observed, "ci95_low": float(low), "ci95_high": float(high),
            "samples": samples}

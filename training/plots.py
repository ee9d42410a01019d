"""PNG plots of a training run (matplotlib without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str
) -> None:
    matrix = np.asarray(matrix)
    size = max(5.0, 0.7 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(
        matrix, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
        xticklabels=class_names, yticklabels=class_names,
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_history(history: Sequence[dict], path: str | Path) -> None:
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    score_ax.plot(epochs, [r["train_accuracy"] for r in history], label="train accuracy")
    score_ax.plot(epochs, [r["val_accuracy"] for r in history], label="val accuracy")
    score_ax.plot(epochs, [r["val_macro_f1"] for r in history], label="val macro-F1")
    score_ax.set_xlabel("epoch")
    score_ax.set_ylim(0, 1.02)
    score_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

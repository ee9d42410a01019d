"""Benchmark figures (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmark.metrics import AGREEMENT  # noqa: E402


def _style(plot_style: str) -> None:
    if plot_style == "seaborn":
        sns.set_theme(style="whitegrid")


def confusion_matrices(student: dict, birdnet: dict, class_names: Sequence[str],
                       path: Path, plot_style: str) -> None:
    _style(plot_style)
    size = max(5.0, 0.6 * len(class_names) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, metrics, title in zip(axes, (student, birdnet), ("Student", "BirdNET"), strict=True):
        sns.heatmap(np.asarray(metrics["confusion_matrix"]), annot=True, fmt="d", cmap="Blues",
                    cbar=False, ax=ax, xticklabels=class_names, yticklabels=class_names)
        ax.set_title(f"{title} (macro-F1 {metrics['macro_f1']:.3f})")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def agreement_analysis(categories: pd.Series, path: Path, plot_style: str) -> None:
    _style(plot_style)
    counts = [int((categories == c).sum()) for c in AGREEMENT]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([c.replace("_", " ") for c in AGREEMENT], counts,
           color=["#2a9d8f", "#457b9d", "#e9c46a", "#e76f51"])
    for x, n in enumerate(counts):
        ax.text(x, n, str(n), ha="center", va="bottom")
    ax.set_ylabel("files")
    ax.set_title("Agreement between the student and BirdNET")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def per_class_accuracy(student: dict, birdnet: dict, class_names: Sequence[str], path: Path,
                       plot_style: str) -> None:
    """Per-class recall (the accuracy on files of that class), side by side."""
    _style(plot_style)
    x = np.arange(len(class_names))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.8 * len(class_names) + 2), 4.5))
    for offset, metrics, name in ((-0.2, student, "Student"), (0.2, birdnet, "BirdNET")):
        ax.bar(x + offset, [metrics["per_class"][c]["recall"] for c in class_names], 0.4,
               label=name)
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy on files of the class")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confidence_distributions(student: pd.DataFrame, birdnet: pd.DataFrame, path: Path,
                             plot_style: str) -> None:
    _style(plot_style)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, table, title in zip(axes, (student, birdnet), ("Student", "BirdNET"), strict=True):
        correct = table["predicted"] == table["label"]
        bins = np.linspace(0, 1, 21)
        ax.hist(table.loc[correct, "confidence"], bins=bins, alpha=0.7, label="correct")
        ax.hist(table.loc[~correct, "confidence"], bins=bins, alpha=0.7, label="wrong")
        ax.set_title(f"{title} confidence")
        ax.set_xlabel("confidence")
        ax.legend()
    axes[0].set_ylabel("files")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

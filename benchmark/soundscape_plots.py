"""Soundscape figures: precision-recall curves per species and a timeline of one recording."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

MODEL_COLOURS = {"student": "#1d3557", "birdnet": "#e76f51"}


def pr_curves(truth: np.ndarray, scores: dict[str, np.ndarray],
              thresholds: dict[str, np.ndarray], species: Sequence[str], path: Path) -> bool:
    """One panel per species that occurs; the dot marks each model's threshold in use.
    False when no species occurs (nothing to draw)."""
    present = [c for c in range(len(species)) if truth[:, c].any()]
    if not present:
        return False
    cols = min(3, len(present))
    rows = -(-len(present) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, c in zip(axes.flat, present, strict=False):
        for model, values in scores.items():
            precision, recall, _ = precision_recall_curve(truth[:, c], values[:, c])
            ax.plot(recall, precision, color=MODEL_COLOURS.get(model), label=model,
                    drawstyle="steps-post")
            kept = values[:, c] >= thresholds[model][c]
            tp = int((kept & truth[:, c]).sum())
            if kept.any():
                ax.plot(tp / truth[:, c].sum(), tp / kept.sum(), "o",
                        color=MODEL_COLOURS.get(model))
        ax.set_title(f"{species[c]} ({int(truth[:, c].sum())} segments)", fontsize=10)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def timeline(file: str, segments: pd.DataFrame, targets: Sequence[tuple[str, ...]],
             windows: dict[str, pd.DataFrame], thresholds: dict[str, np.ndarray],
             species: Sequence[str], path: Path) -> None:
    """Annotation (target species per segment) above each model's window scores over time."""
    mine = segments.index[segments["file"] == file]
    fig, axes = plt.subplots(1 + len(windows), 1, figsize=(14, 2.2 + 2.2 * len(windows)),
                             sharex=True)
    colours = plt.get_cmap("tab10")
    ax = axes[0]
    for i in mine:
        a, b = segments.at[i, "start"], segments.at[i, "end"]
        others = [s for s in segments.at[i, "species"] if s not in targets[i]]
        if others:
            ax.axvspan(a, b, ymin=0, ymax=0.08, color="0.75", lw=0)
        for name in targets[i]:
            c = list(species).index(name)
            ax.broken_barh([(a, b - a)], (c + 0.1, 0.8), color=colours(c % 10))
    ax.set_yticks(np.arange(len(species)) + 0.5, species, fontsize=8)
    ax.set_ylim(0, len(species))
    ax.set_title(f"{Path(file).name}: annotated target species (grey: other birds only)")
    for ax, (model, table) in zip(axes[1:], windows.items(), strict=True):
        rows = table[table["file"] == file]
        middle = 0.5 * (rows["start"] + rows["end"])
        for c, name in enumerate(species):
            ax.plot(middle, rows[name], color=colours(c % 10), lw=1, label=name)
            ax.axhline(thresholds[model][c], color=colours(c % 10), ls=":", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"{model} score")
    axes[-1].set_xlabel("time (s)")
    axes[1].legend(fontsize=7, ncol=min(5, len(species)), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

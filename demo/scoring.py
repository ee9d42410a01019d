"""Detections of the demo's long recording scored against the calls planted in it.

A planted call is found when a detection of its species overlaps it; a detection is correct
when it overlaps a planted call of its species. Per species: recall (calls found / calls
planted) and precision (correct detections / detections).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def score_detections(detections: pd.DataFrame, calls: pd.DataFrame) -> pd.DataFrame:
    """One row per species planted or detected: calls, found, recall, detections, correct,
    precision (NaN where undefined)."""
    rows = []
    species = list(dict.fromkeys([*calls["species"], *detections["species"]]))
    for name in species:
        planted = calls[calls["species"] == name]
        found = detections[detections["species"] == name]
        c0, c1 = planted["start_s"].to_numpy(float), planted["end_s"].to_numpy(float)
        d0, d1 = found["start"].to_numpy(float), found["end"].to_numpy(float)
        overlap = (d0[:, None] < c1[None, :]) & (d1[:, None] > c0[None, :])
        n_found, n_correct = int(overlap.any(axis=0).sum()), int(overlap.any(axis=1).sum())
        rows.append({
            "species": name, "calls": len(planted), "found": n_found,
            "recall": n_found / len(planted) if len(planted) else np.nan,
            "detections": len(found), "correct": n_correct,
            "precision": n_correct / len(found) if len(found) else np.nan,
        })
    return pd.DataFrame(rows)


def score_files(detections_csv: str | Path, annotations_csv: str | Path) -> pd.DataFrame:
    return score_detections(pd.read_csv(detections_csv), pd.read_csv(annotations_csv))


def format_scores(table: pd.DataFrame) -> list[str]:
    lines = []
    for row in table.itertuples():
        recall = "  -  " if np.isnan(row.recall) else f"{row.recall:.2f}"
        precision = "  -  " if np.isnan(row.precision) else f"{row.precision:.2f}"
        lines.append(f"    {row.species:<22} recall {recall} ({row.found}/{row.calls} calls)  "
                     f"precision {precision} ({row.correct}/{row.detections} detections)")
    missed = table[(table["calls"] > 0) & (table["found"] == 0)]["species"].tolist()
    if missed:
        lines.append(f"    not found: {', '.join(missed)}")
    return lines

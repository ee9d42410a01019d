"""The demo's scoring of detections against planted calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from demo.scoring import format_scores, score_detections


def test_recall_and_precision_per_species():
    calls = pd.DataFrame({"species": ["A_a", "A_a", "B_b", "C_c"],
                          "start_s": [1.0, 10.0, 20.0, 30.0], "end_s": [2.0, 11.0, 21.0, 31.0]})
    detections = pd.DataFrame({
        "species": ["A_a", "A_a", "A_a", "B_b", "D_d"],
        # The first two overlap the call at 1-2 s; the third touches nothing.
        "start": [0.0, 1.5, 14.0, 19.0, 5.0], "end": [3.0, 4.5, 17.0, 22.0, 8.0],
    })
    table = score_detections(detections, calls).set_index("species")
    assert table.loc["A_a", ["found", "calls", "correct", "detections"]].tolist() == [1, 2, 2, 3]
    assert table.loc["A_a", "recall"] == pytest.approx(0.5)
    assert table.loc["A_a", "precision"] == pytest.approx(2 / 3)
    assert table.loc["B_b", "recall"] == 1.0 and table.loc["B_b", "precision"] == 1.0
    assert table.loc["C_c", "recall"] == 0.0 and np.isnan(table.loc["C_c", "precision"])
    assert np.isnan(table.loc["D_d", "recall"]) and table.loc["D_d", "precision"] == 0.0
    assert format_scores(table.reset_index())[-1] == "    not found: C_c"

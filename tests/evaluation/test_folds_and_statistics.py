"""Fold construction and the statistics of the scoreboard, on hand-made manifests."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from datasets.split_manifest import DatasetError
from evaluation.folds import assign_folds, fold_manifest
from evaluation.report import summarise_results
from evaluation.statistics import paired_ratios, summarise


def manifest(groups_per_label: dict[str, int], cuts: int = 2) -> pd.DataFrame:
    """Each recording group has ``cuts`` files (cuts of one recording must stay together)."""
    rows = []
    for label, n in groups_per_label.items():
        source = "esc50" if label == "no_birds" else "bird"
        for g in range(n):
            for c in range(cuts):
                rows.append({"path": f"{label}/XC{g}_{c}.wav", "label": label,
                             "group": f"{source}:{label}-XC{g}", "split": "train",
                             "source": source})
    return pd.DataFrame(rows)


def test_every_group_is_tested_exactly_once_and_never_split():
    table = manifest({"A": 11, "B": 7, "C": 3, "no_birds": 9})
    fold_of = assign_folds(table, 5, seed=3)
    assert set(fold_of) == set(table["group"])
    tested = []
    for fold in range(5):
        part = fold_manifest(table, fold_of, fold, seed=3)
        # A group's files all share one split.
        assert (part.groupby("group")["split"].nunique() == 1).all()
        test_groups = set(part.loc[part["split"] == "test", "group"])
        assert test_groups == {g for g, f in fold_of.items() if f == fold}
        # Nothing tested is trained or validated on.
        assert not test_groups & set(part.loc[part["split"] != "test", "group"])
        assert {"train", "val"} <= set(part["split"])
        tested.extend(test_groups)
    assert sorted(tested) == sorted(set(table["group"]))  # each group tested once


def test_folds_are_stratified_and_deterministic():
    table = manifest({"A": 10, "B": 10, "no_birds": 5})
    first = assign_folds(table, 5, seed=1)
    assert first == assign_folds(table.sample(frac=1.0, random_state=0), 5, seed=1)
    assert first != assign_folds(table, 5, seed=2)
    for label in ("A", "B"):
        per_fold = [sum(1 for g, f in first.items() if f == k and g.startswith(f"bird:{label}-"))
                    for k in range(5)]
        assert per_fold == [2, 2, 2, 2, 2]


def test_few_shot_keeps_n_recordings_per_species_deterministically():
    table = manifest({"A": 12, "B": 9, "no_birds": 10})
    fold_of = assign_folds(table, 3, seed=0)
    part = fold_manifest(table, fold_of, 1, seed=0, val_fraction=0.2,
                         train_recordings_per_class=5)
    again = fold_manifest(table, fold_of, 1, seed=0, val_fraction=0.2,
                          train_recordings_per_class=5)
    pd.testing.assert_frame_equal(part, again)
    used = part[part["split"] != "test"]
    for label in ("A", "B"):
        rows = used[used["label"] == label]
        assert rows["group"].nunique() == 5
        assert rows.loc[rows["split"] == "val", "group"].nunique() == 1
    # no_birds sources are not thinned; the test part is the whole fold.
    assert used.loc[used["label"] == "no_birds", "group"].nunique() == sum(
        1 for g, f in fold_of.items() if "no_birds" in g and f != 1)
    full = fold_manifest(table, fold_of, 1, seed=0)
    pd.testing.assert_frame_equal(full[full["split"] == "test"].reset_index(drop=True),
                                  part[part["split"] == "test"].reset_index(drop=True))
    # A different seed picks other recordings.
    other = fold_manifest(table, fold_of, 1, seed=9, train_recordings_per_class=5)
    assert set(other.loc[other["split"] != "test", "group"]) != set(used["group"])


def test_bad_fold_settings_are_clear_errors():
    table = manifest({"A": 4})
    with pytest.raises(DatasetError, match="folds"):
        assign_folds(table, 1, seed=0)
    fold_of = assign_folds(table, 2, seed=0)
    with pytest.raises(DatasetError, match="train_recordings_per_class"):
        fold_manifest(table, fold_of, 0, seed=0, train_recordings_per_class=0)
    with pytest.raises(DatasetError, match="val_fraction"):
        fold_manifest(table, fold_of, 0, seed=0, val_fraction=1.0)


def test_summary_statistics_match_hand_computed_values():
    stat = summarise([0.5, 0.7, 0.9])
    assert stat["n"] == 3
    assert stat["mean"] == pytest.approx(0.7)
    assert stat["sd"] == pytest.approx(0.2)  # sqrt(((0.2)^2 * 2) / 2)
    half = 4.302652729911275 * 0.2 / math.sqrt(3)  # t(0.975, df=2)
    assert stat["ci95_low"] == pytest.approx(0.7 - half)
    assert stat["ci95_high"] == pytest.approx(0.7 + half)
    assert summarise([0.4])["sd"] is None and summarise([])["mean"] is None
    assert paired_ratios([0.5, 0.2, 0.3], [1.0, 0.0, 0.6]) == [0.5, 0.5]


def test_ratio_is_the_mean_of_per_fold_ratios():
    rows = []
    for fold, (s, b, lin) in enumerate([(0.4, 0.8, 0.9), (0.6, 1.0, 1.0), (0.9, 0.9, 0.9)]):
        for model, value in (("student", s), ("birdnet", b), ("birdnet_linear", lin)):
            rows.append({"repeat": 0, "fold": fold, "model": model, "macro_f1": value,
                         "accuracy": value, "balanced_accuracy": value,
                         "macro_roc_auc": None})
    summary = summarise_results(pd.DataFrame(rows))
    ratio = summary["ratios"]["student/birdnet macro_f1"]
    assert ratio["mean"] == pytest.approx((0.5 + 0.6 + 1.0) / 3)
    assert summary["models"]["birdnet"]["macro_f1"]["mean"] == pytest.approx(0.9)
    assert summary["models"]["student"]["macro_roc_auc"]["n"] == 0

import pandas as pd
import pytest

from datasets.split_manifest import (
    DatasetError,
    SourceFile,
    build_split_manifest,
    limit_files_per_class,
    load_manifest,
    recording_group,
    save_manifest,
    scan_species_folders,
)


def make_files(n_species=3, n_recordings=10, cuts=1):
    return [
        SourceFile(f"sp{s}/XC{s}{r:03d}_{c}.wav", f"sp{s}")
        for s in range(n_species)
        for r in range(n_recordings)
        for c in range(cuts)
    ]


def test_manifest_is_deterministic_and_order_independent():
    files = make_files()
    a = build_split_manifest(files, (0.7, 0.15, 0.15), seed=3)
    b = build_split_manifest(list(reversed(files)), (0.7, 0.15, 0.15), seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = build_split_manifest(files, (0.7, 0.15, 0.15), seed=4)
    assert not a["split"].equals(c["split"])


def test_groups_never_cross_splits_and_every_class_is_in_every_split():
    files = make_files(cuts=3)
    manifest = build_split_manifest(files, (0.7, 0.15, 0.15), seed=0, group_regex=r"XC\d+")
    assert manifest.groupby("group")["split"].nunique().max() == 1
    assert manifest["group"].nunique() == 30  # three cuts per recording share one group
    for _, per_label in manifest.groupby("label"):
        assert set(per_label["split"]) == {"train", "val", "test"}
    counts = manifest.drop_duplicates("group")["split"].value_counts()
    # 10 recordings per class at 70/15/15 -> 7/1/2 by largest remainder.
    assert (counts["train"], counts["val"], counts["test"]) == (21, 3, 6)


def test_recording_group_regex_and_default():
    assert recording_group("a/XC12345_part2.mp3", r"XC\d+") == "XC12345"
    assert recording_group("a/other_name.wav", r"XC\d+") == "other_name"
    assert recording_group("a/XC1.wav", None) == "XC1"


def test_small_classes_keep_a_training_group():
    files = make_files(n_species=1, n_recordings=2)
    manifest = build_split_manifest(files, (0.7, 0.15, 0.15), seed=0)
    assert "train" in set(manifest["split"])


def test_bad_ratios_rejected():
    with pytest.raises(DatasetError):
        build_split_manifest(make_files(), (0.5, 0.5), seed=0)


def test_save_load_round_trip(tmp_path):
    manifest = build_split_manifest(make_files(), (0.7, 0.15, 0.15), seed=0)
    path = save_manifest(manifest, tmp_path / "m.csv")
    pd.testing.assert_frame_equal(load_manifest(path), manifest.astype(str))


def test_scan_reports_missing_and_empty_folders(tmp_path):
    (tmp_path / "A_a").mkdir()
    (tmp_path / "A_a" / "x.wav").write_bytes(b"RIFF")
    (tmp_path / "A_a" / "notes.txt").write_text("hi")
    (tmp_path / "B_b").mkdir()
    skipped = []
    files = scan_species_folders(tmp_path, ["A_a", "B_b", "C_c"], skipped)
    assert [f.path for f in files] == ["A_a/x.wav"]
    reasons = {s.reason for s in skipped}
    assert reasons == {
        "species folder missing", "species folder empty", "not an audio file extension"
    }
    with pytest.raises(DatasetError, match="does not exist"):
        scan_species_folders(tmp_path / "nope", ["A_a"], [])
    with pytest.raises(DatasetError, match="No audio files"):
        scan_species_folders(tmp_path, ["B_b"], [])


def test_files_limit_is_round_robin():
    files = make_files(n_species=3, n_recordings=5)
    chosen = limit_files_per_class(files, 7)
    assert len(chosen) == 7
    assert {f.label for f in chosen} == {"sp0", "sp1", "sp2"}

import subprocess
import sys

import pandas as pd
import pytest

from datasets.dataset_factory import build_data
from datasets.no_birds import (
    ESC50,
    QUIET_SEGMENT,
    NoBirdsSample,
    plan_no_birds_samples,
    read_no_birds_folder,
    split_counts,
)
from datasets.no_birds_generation import generate_no_birds, training_config
from datasets.split_manifest import DatasetError
from tests.conftest import REPO_ROOT


def _candidates():
    out = []
    for split in ("train", "val", "test"):
        for i in range(20):
            out.append(NoBirdsSample(ESC50, f"audio/{split}{i}.wav", 0.5, split, "rain", f"k{i}"))
            out.append(NoBirdsSample(QUIET_SEGMENT, f"Sp/{split}{i}.wav", i, split, "", f"q{i}"))
    return out


def test_plan_is_deterministic_respects_ratio_and_splits():
    counts = split_counts(20, (0.7, 0.15, 0.15))
    assert counts == {"train": 14, "val": 3, "test": 3}
    plan = plan_no_birds_samples(_candidates(), counts, esc50_ratio=0.5, seed=1)
    assert plan == plan_no_birds_samples(list(reversed(_candidates())), counts, 0.5, 1)
    assert plan != plan_no_birds_samples(_candidates(), counts, 0.5, 2)
    train = [s for s in plan if s.split == "train"]
    assert len(train) == 14 and sum(s.source_type == ESC50 for s in train) == 7
    # Each sample keeps its source's split.
    assert all(s.source_path.split("/")[1].startswith(s.split) for s in plan)


def test_plan_fills_a_short_source_from_the_other():
    only_quiet = [c for c in _candidates() if c.source_type == QUIET_SEGMENT]
    plan = plan_no_birds_samples(only_quiet, {"train": 10}, esc50_ratio=0.5, seed=0)
    assert len(plan) == 10 and {s.source_type for s in plan} == {QUIET_SEGMENT}
    with pytest.raises(DatasetError):
        plan_no_birds_samples(only_quiet, {"train": 1}, esc50_ratio=1.5, seed=0)


def _generator_config(demo_corpus, tmp_path, **extra):
    overrides = [
        f"dataset.bird_data_dir={demo_corpus.bird_dir}",
        f"dataset.esc50_dir={demo_corpus.esc50_dir}",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "dataset.num_workers=0",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return training_config(overrides)


def test_generator_end_to_end_deterministic_and_split_inheriting(demo_corpus, tmp_path):
    cfg = _generator_config(demo_corpus, tmp_path)
    out = tmp_path / "no_birds"
    table, skipped = generate_no_birds(cfg, out, num_samples=30, esc50_ratio=0.5)
    assert not skipped
    assert len(table) == 30 and set(table["split"]) == {"train", "val", "test"}
    assert set(table["source_type"]) == {ESC50, QUIET_SEGMENT}
    assert "chirping_birds" not in set(table["category"])
    files = sorted(p.name for p in out.glob("*.wav"))
    assert files == sorted(table["file"])
    # The split of every sample is the split of its source in the training manifest.
    data = build_data(training_config([
        f"dataset.bird_data_dir={demo_corpus.bird_dir}",
        f"dataset.esc50_dir={demo_corpus.esc50_dir}",
        f"dataset.cache_dir={tmp_path / 'cache'}", "dataset.num_workers=0",
    ]))
    split_of = dict(zip(data.manifest["path"], data.manifest["split"], strict=True))
    for row in table.itertuples():
        assert split_of[row.source_path] == row.split
    # ESC-50 clips of one src_file share a split.
    esc = table[table["source_type"] == ESC50].copy()
    esc["src"] = esc["source_path"].str.split("-").str[1]
    assert esc.groupby("src")["split"].nunique().max() == 1

    # A re-run with the same arguments changes nothing; fewer samples leaves no stale files.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    again, _ = generate_no_birds(cfg, out, num_samples=30, esc50_ratio=0.5)
    pd.testing.assert_frame_equal(again, table)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    smaller, _ = generate_no_birds(cfg, out, num_samples=10, esc50_ratio=0.5)
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(smaller["file"])
    assert len(read_no_birds_folder(out)) == 10
    # Same arguments elsewhere give the same bytes.
    other = tmp_path / "other"
    generate_no_birds(cfg, other, num_samples=10, esc50_ratio=0.5)
    for name in smaller["file"]:
        assert (other / name).read_bytes() == (out / name).read_bytes()


def test_training_reads_pregenerated_folder_with_its_splits(demo_corpus, tmp_path):
    cfg = _generator_config(demo_corpus, tmp_path)
    out = tmp_path / "no_birds"
    table, _ = generate_no_birds(cfg, out, num_samples=20, esc50_ratio=0.5)
    data = build_data(training_config([
        f"dataset.bird_data_dir={demo_corpus.bird_dir}",
        f"dataset.cache_dir={tmp_path / 'cache'}", "dataset.num_workers=0",
        "dataset.load_pregenerated_no_birds=true", f"dataset.pregenerated_no_birds_dir={out}",
    ]))
    no_birds = data.class_names.index("no_birds")
    for split in ("train", "val", "test"):
        expected = (table["split"] == split).sum()
        assert sum(e.label == no_birds for e in data.datasets[split].examples) == expected
    with pytest.raises(DatasetError, match="generate_no_birds_samples.py"):
        build_data(training_config([
            f"dataset.bird_data_dir={demo_corpus.bird_dir}", "dataset.num_workers=0",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "dataset.load_pregenerated_no_birds=true",
            f"dataset.pregenerated_no_birds_dir={tmp_path / 'absent'}",
        ]))


def test_online_mode_uses_esc50_and_quiet_segments(demo_corpus, tmp_path):
    data = build_data(training_config([
        f"dataset.bird_data_dir={demo_corpus.bird_dir}",
        f"dataset.esc50_dir={demo_corpus.esc50_dir}",
        f"dataset.cache_dir={tmp_path / 'cache'}", "dataset.num_workers=0",
    ]))
    kinds = {e.kind for e in data.datasets["train"].examples if e.label == 4}
    assert kinds == {"esc50", "quiet"}
    assert all("-14.wav" not in e.path for e in data.datasets["train"].examples)  # birds


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--esc50_ratio", "2"], "between 0 and 1"),
        (["--num_samples", "0"], "at least 1"),
        (["--bird_dir", "/nonexistent/birds"], "does not exist"),
        (["--esc50_dir", "/nonexistent/esc"], "esc50"),
    ],
)
def test_cli_reports_bad_arguments(demo_corpus, tmp_path, args, message):
    base = ["--bird_dir", str(demo_corpus.bird_dir), "--esc50_dir", str(demo_corpus.esc50_dir),
            "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "generate_no_birds_samples.py", *base, *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert message.lower() in result.stderr.lower()
    assert not (tmp_path / "out" / "manifest.csv").exists()

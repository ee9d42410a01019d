import json
import subprocess
import sys

import numpy as np
import pytest

from distillation.shards import SHARDS_DIRNAME, ShardError, merge_shards, shard_dir, shard_of
from distillation.soft_label_records import read_metadata, read_record
from distillation.soft_labels import extract_soft_labels
from tests.conftest import REPO_ROOT

SPECIES = ["Bubo_bubo", "Apus_apus", "Certhia_familiaris", "Poecile_montanus"]


def _extract(demo_corpus, out, shard=None):
    return extract_soft_labels(SPECIES, out, demo_corpus.bird_dir, hop=3.0, files_limit=8,
                               progress=False, shard=shard)


def test_shard_assignment_is_stable_and_complete():
    keys = [f"Sp/XC{i}.wav" for i in range(200)]
    shards = [shard_of(k, 3) for k in keys]
    assert shards == [shard_of(k, 3) for k in keys]
    assert set(shards) == {0, 1, 2}


def test_shards_merge_into_the_single_run_output(demo_corpus, tmp_path):
    single = tmp_path / "single"
    _extract(demo_corpus, single)
    merged = tmp_path / "merged"
    for i in range(2):
        _extract(demo_corpus, shard_dir(merged, i, 2), shard=(i, 2))
    merge_shards(merged)
    one, both = read_metadata(single), read_metadata(merged)
    assert set(one["files"]) == set(both["files"])
    assert one["files_processed"] == both["files_processed"] and one["windows"] == both["windows"]
    assert one["settings_hash"] == both["settings_hash"]
    for key in one["files"]:
        a, b = read_record(single, key), read_record(merged, key)
        for name in ("starts", "target_logits", "no_birds_logit"):
            np.testing.assert_array_equal(a[name], b[name])


def test_missing_and_overlapping_shards_are_reported(demo_corpus, tmp_path):
    out = tmp_path / "out"
    _extract(demo_corpus, shard_dir(out, 0, 2), shard=(0, 2))
    with pytest.raises(ShardError, match=r"Shards \[1\] of 2 are missing"):
        merge_shards(out)
    _extract(demo_corpus, shard_dir(out, 1, 2), shard=(1, 2))
    meta_path = shard_dir(out, 1, 2) / "metadata.json"
    meta = json.loads(meta_path.read_text())
    stolen = next(iter(read_metadata(shard_dir(out, 0, 2))["files"].items()))
    meta["files"][stolen[0]] = stolen[1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ShardError, match="overlap"):
        merge_shards(out)
    assert not (out / "metadata.json").exists()
    assert (out / SHARDS_DIRNAME).is_dir()


def test_cli_shard_arguments(demo_corpus, tmp_path):
    bad = subprocess.run(
        [sys.executable, "extract_soft_labels.py", "--species_list", "distillation/species_4.txt",
         "--bird_dir", str(demo_corpus.bird_dir), "--output_path", str(tmp_path / "o"),
         "--num_shards", "2", "--shard_index", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "shard_index" in bad.stderr
    nothing = subprocess.run(
        [sys.executable, "extract_soft_labels.py", "--merge_shards", "--output_path",
         str(tmp_path / "o")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 2 and "No shards" in nothing.stderr

"""Soft-label extraction split over a cluster's job array, and the merge of the shards.

``extract_soft_labels.py --num_shards K --shard_index i --output_path OUT`` labels the files
whose key hashes to ``i`` modulo ``K`` (deterministic, independent of file order or machine)
into ``OUT/shards/shard-i-of-K/``, a complete soft-label folder of its own, so shards never
write the same file. ``extract_soft_labels.py --merge_shards --output_path OUT`` then checks
that all K shards are there, were made with the same settings and do not overlap, and combines
them into ``OUT`` (records linked or copied, one metadata.json), which reads exactly like the
output of a single run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from common.file_io import write_json_atomic
from distillation.soft_label_records import METADATA_FILENAME, read_metadata, record_path

log = logging.getLogger(__name__)

SHARDS_DIRNAME = "shards"
SHARD_PATTERN = re.compile(r"^shard-(\d+)-of-(\d+)$")


class ShardError(ValueError):
    """Shards that cannot be merged (missing, overlapping, or made with other settings)."""


def shard_of(key: str, num_shards: int) -> int:
    """The shard a file belongs to: a stable hash of its key, not of its position in a list."""
    # A file name need not be valid UTF-8: its original bytes are hashed.
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
    return int(digest, 16) % num_shards


def check_shard(num_shards: int, shard_index: int) -> None:
    if num_shards < 1:
        raise ShardError(f"--num_shards must be at least 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ShardError(f"--shard_index must be in 0..{num_shards - 1}, got {shard_index}")


def shard_dir(output: str | Path, shard_index: int, num_shards: int) -> Path:
    return Path(output) / SHARDS_DIRNAME / f"shard-{shard_index}-of-{num_shards}"


def select_shard(keys: Sequence[str], num_shards: int, shard_index: int) -> set[str]:
    return {k for k in keys if shard_of(k, num_shards) == shard_index}


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)  # same file system: no copy at all
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def merge_shards(output: str | Path) -> dict:
    """Combine ``output/shards/shard-*-of-K`` into ``output``; returns the merged metadata."""
    output = Path(output)
    folders = sorted((output / SHARDS_DIRNAME).glob("shard-*-of-*"))
    found: dict[int, Path] = {}
    counts = set()
    for folder in folders:
        match = SHARD_PATTERN.match(folder.name)
        if match:
            found[int(match.group(1))] = folder
            counts.add(int(match.group(2)))
    if not found:
        raise ShardError(f"No shards under '{output / SHARDS_DIRNAME}' to merge")
    if len(counts) != 1:
        raise ShardError(f"Shards of different --num_shards in one folder: {sorted(counts)}")
    num_shards = counts.pop()
    metadata = {i: read_metadata(folder) for i, folder in found.items()}
    missing = sorted(set(range(num_shards)) - {i for i, m in metadata.items() if m})
    if missing:
        raise ShardError(f"Shards {missing} of {num_shards} are missing or unfinished; run "
                         "them (same command with --shard_index) before merging")
    incomplete = sorted(i for i, m in metadata.items() if m.get("status") != "complete")
    if incomplete:
        raise ShardError(f"Shards {incomplete} did not finish; run them again to complete")
    hashes = {m["settings_hash"] for m in metadata.values()}
    if len(hashes) != 1:
        raise ShardError("Shards were made with different settings (species, hop or location)")
    owner: dict[str, int] = {}
    for i, m in sorted(metadata.items()):
        for key in m["files"]:
            if key in owner:
                raise ShardError(f"'{key}' is in shards {owner[key]} and {i}: the shards "
                                 "overlap; were they run with different file lists?")
            owner[key] = i
            if shard_of(key, num_shards) != i:
                raise ShardError(f"'{key}' does not belong to shard {i} of {num_shards}")
    for key, i in owner.items():
        _link_or_copy(record_path(found[i], key), record_path(output, key))
    first = metadata[0]
    merged = dict(first)
    merged["files"] = dict(sorted(
        (k, v) for m in metadata.values() for k, v in m["files"].items()))
    merged["files_processed"] = len(merged["files"])
    merged["windows"] = int(sum(v["windows"] for v in merged["files"].values()))
    merged["failed_files"] = sorted(
        (f for m in metadata.values() for f in m.get("failed_files", [])),
        key=lambda f: f["path"])
    merged["skipped"] = first.get("skipped", [])
    merged["merged_from_shards"] = num_shards
    write_json_atomic(merged, output / METADATA_FILENAME)
    log.info("Merged %d shards into %s: %d files, %d windows, %d failed", num_shards, output,
             merged["files_processed"], merged["windows"], len(merged["failed_files"]))
    return merged

"""The split manifest: which file goes to train, validation or test, grouped by recording.

Every later stage (soft labels, distillation, benchmark) reads the same manifest, so a
recording's windows or cuts never appear on both sides of a split.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import UserError
from common.file_io import read_table, save_table_atomic
from common.safe_paths import path_inside
from common.skipped_files import SkippedFile
from datasets.file_scan import scan_audio_tree

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST_COLUMNS: list[str] = ["path", "label", "group", "split", "source"]
MANIFEST_FILENAME = "split_manifest.csv"


class DatasetError(UserError, RuntimeError):
    """A problem with the user's data that stops the run; the message says what to do."""


@dataclass(frozen=True)
class SourceFile:
    """An audio file with its label; ``path`` is relative to the root of ``source``."""

    path: str
    label: str
    source: str = "bird"


def scan_species_folders(
    bird_dir: str | Path, classes: Sequence[str], skipped: list[SkippedFile]
) -> list[SourceFile]:
    """Audio files of each wanted species folder, in class order then sorted by name.

    A missing or empty species folder is skipped (and reported); a missing dataset folder, or
    no usable file at all, is an error.
    """
    bird_dir = Path(bird_dir)
    if not bird_dir.is_dir():
        raise DatasetError(
            f"Bird dataset folder '{bird_dir}' does not exist. Put recordings in "
            f"'{bird_dir}/<Genus_species>/' or set dataset.bird_data_dir=<folder> "
            "(run 'make demo' to generate a synthetic example corpus)."
        )
    files: list[SourceFile] = []
    for species in classes:
        folder = bird_dir / species
        if not folder.is_dir():
            available = sorted(p.name for p in bird_dir.iterdir() if p.is_dir())
            log.warning("Species folder '%s' is missing (available: %s)", folder, available)
            skipped.append(SkippedFile(str(folder), "species folder missing", "scan"))
            continue
        found = scan_audio_tree(
            folder, lambda path, reason: skipped.append(SkippedFile(str(path), reason, "scan"))
        )
        if not found:
            log.warning("Species folder '%s' holds no audio files", folder)
            skipped.append(SkippedFile(str(folder), "species folder empty", "scan"))
        files.extend(SourceFile(p.relative_to(bird_dir).as_posix(), species) for p in found)
    if not files:
        raise DatasetError(
            f"No audio files found for classes {list(classes)} under '{bird_dir}'. Check "
            "dataset.allowed_bird_classes against the folder names (Genus_species)."
        )
    return files


def limit_files_per_class(files: list[SourceFile], limit: int | None) -> list[SourceFile]:
    """At most ``limit`` files in total, taken round-robin over classes (deterministic)."""
    if limit is None or limit <= 0 or limit >= len(files):
        return files
    by_label: dict[str, list[SourceFile]] = defaultdict(list)
    for item in files:
        by_label[item.label].append(item)
    chosen: list[SourceFile] = []
    queues = [list(v) for v in by_label.values()]
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda f: (f.label, f.path))


def recording_group(path: str, group_regex: str | None) -> str:
    """Recording id of a file: the first ``group_regex`` match in its name, else its stem."""
    name = Path(path).name
    if group_regex:
        match = re.search(group_regex, name)
        if match:
            return match.group(0)
    return Path(path).stem


def _split_counts(n_groups: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    """Groups for (train, val, test) by largest remainder; every split gets one when it can."""
    quotas = [n_groups * r / float(sum(ratios)) for r in ratios]
    counts = [int(np.floor(q)) for q in quotas]
    # Leftover groups go to the largest fractional parts; ties favour test, then validation.
    order = sorted(range(3), key=lambda i: (-(quotas[i] - counts[i]), -i))
    for i in order[: n_groups - sum(counts)]:
        counts[i] += 1
    if n_groups >= 3:
        for i in (1, 2):
            if ratios[i] > 0 and counts[i] == 0:
                counts[i] = 1
                counts[0] -= 1
    # Training keeps at least one group: shrink the larger held-out split.
    while counts[0] < 1 and (counts[1] or counts[2]):
        counts[2 if counts[2] >= counts[1] else 1] -= 1
        counts[0] += 1
    return counts[0], counts[1], counts[2]


def build_split_manifest(
    files: Sequence[SourceFile],
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    group_regex: str | None = None,
    group_of: Callable[[SourceFile], str] | None = None,
) -> pd.DataFrame:
    """Deterministic grouped, label-stratified split of ``files``.

    Groups (recordings) are shuffled per label with ``seed`` and dealt into splits by
    ``ratios``; a group never spans two splits. The result depends only on the file list,
    the seed, the ratios and the grouping rule, not on the order files were found in.
    ``group_of`` overrides the name-based rule (ESC-50 groups clips by their ``src_file``).
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise DatasetError(f"dataset.split_ratios must be three non-negative numbers, got {ratios}")
    rows = sorted(
        {(f.source, f.path): f for f in files}.values(), key=lambda f: (f.source, f.path)
    )
    def group_name(f: SourceFile) -> str:
        return group_of(f) if group_of else recording_group(f.path, group_regex)

    group_of_file = {(f.source, f.path): f"{f.source}:{group_name(f)}" for f in rows}
    labels_of_group: dict[str, list[str]] = defaultdict(list)
    for f in rows:
        labels_of_group[group_of_file[(f.source, f.path)]].append(f.label)
    # A group is stratified under its most common label (ties: alphabetical).
    group_label = {
        g: sorted(set(ls), key=lambda lab: (-ls.count(lab), lab))[0]
        for g, ls in labels_of_group.items()
    }
    split_of_group: dict[str, str] = {}
    for label in sorted(set(group_label.values())):
        groups = sorted(g for g, lab in group_label.items() if lab == label)
        # Seed per label so adding files of one species does not reshuffle the others.
        label_seed = [seed, *label.encode()]
        order = np.random.default_rng(label_seed).permutation(len(groups))
        n_train, n_val, _ = _split_counts(len(groups), ratios)
        for rank, index in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            split_of_group[groups[index]] = split
    return pd.DataFrame(
        [
            {
                "path": f.path,
                "label": f.label,
                "group": group_of_file[(f.source, f.path)],
                "split": split_of_group[group_of_file[(f.source, f.path)]],
                "source": f.source,
            }
            for f in rows
        ],
        columns=MANIFEST_COLUMNS,
    )


def save_manifest(manifest: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically (temporary file, then rename)."""
    return save_table_atomic(manifest, path)


def load_manifest(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Split manifest '{path}' not found")
    table = read_split_table(path, MANIFEST_COLUMNS)
    for row_path in table["path"]:
        path_inside(".", row_path, f"split manifest '{path}'")  # before any file is opened
    return table


def read_split_table(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV with a ``split`` column, all as strings, checked for columns and split names."""
    try:
        table = read_table(path)
    except (ValueError, pd.errors.ParserError) as error:
        raise DatasetError(f"'{path}' is not a readable CSV table ({error}); regenerate it") \
            from error
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(f"'{path}' lacks columns {missing}; regenerate it")
    bad = sorted(set(table["split"]) - set(SPLITS))
    if bad:
        raise DatasetError(f"'{path}' has unknown split names {bad}")
    return table


def manifest_to_records(manifest: pd.DataFrame) -> list[dict[str, str]]:
    """Plain rows, for storing the manifest inside a checkpoint."""
    return [{k: str(v) for k, v in row.items()} for row in manifest.to_dict(orient="records")]


def manifest_from_records(records: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=MANIFEST_COLUMNS)

"""The no_birds class: which background windows to use, for the offline and the online mode.

Both modes run :func:`plan_no_birds_samples` on the same prepared recordings, so
``generate_no_birds_samples.py`` (offline, writes files) and training with
``dataset.load_pregenerated_no_birds=false`` (online, in memory) pick the same windows.

Sources:
- quiet segments of bird recordings (the users' own background), and
- ESC-50 clips of non-bird categories (rain, engines, voices...).

Every sample inherits the split of its source recording (bird recordings by the split
manifest, ESC-50 clips by their ``src_file``), so validation and test no-birds audio never
comes from a recording seen in training.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from common.file_io import save_table_atomic, write_json_atomic, write_wav_atomic
from common.safe_paths import plain_file_name
from datasets.audio_cache import DecodedAudioCache
from datasets.audio_utils import pad_or_crop
from datasets.bird_dataset import PreparedRecording
from datasets.split_manifest import SPLITS, DatasetError, read_split_table

log = logging.getLogger(__name__)

QUIET_SEGMENT = "quiet_segment"
ESC50 = "esc50"
NO_BIRDS_MANIFEST_COLUMNS = ["file", "source_type", "source_path", "offset", "split", "category"]


@dataclass(frozen=True)
class NoBirdsSample:
    source_type: str  # QUIET_SEGMENT | ESC50
    source_path: str  # relative to the source's root (bird_data_dir or esc50_dir)
    offset: float  # seconds into the source
    split: str
    category: str  # ESC-50 category, or "" for quiet segments
    key: str  # decoded-audio cache key of the source

    def file_name(self) -> str:
        """A stable, readable output name: the same sample always gets the same file."""
        stem = self.source_path.replace("/", "__").rsplit(".", 1)[0]
        prefix = "esc50" if self.source_type == ESC50 else "quiet"
        return f"{prefix}__{stem}__{int(round(self.offset * 1000)):07d}ms.wav"


def split_counts(total: int, ratios: Sequence[float]) -> dict[str, int]:
    """``total`` samples dealt over the splits by largest remainder."""
    quotas = [total * r / float(sum(ratios)) for r in ratios]
    counts = [int(np.floor(q)) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return dict(zip(SPLITS, counts, strict=True))


def candidate_samples(
    recordings: Sequence[PreparedRecording], esc50_categories: dict[str, str]
) -> list[NoBirdsSample]:
    """Every usable background window: quiet segments of bird files, one window per ESC-50 clip."""
    candidates = []
    for rec in recordings:
        if rec.source == "bird":
            candidates.extend(
                NoBirdsSample(QUIET_SEGMENT, rec.path, s, rec.split, "", rec.key)
                for s in rec.quiet_starts
            )
        elif rec.source == ESC50:
            candidates.extend(
                NoBirdsSample(ESC50, rec.path, s, rec.split, esc50_categories.get(rec.path, ""),
                              rec.key)
                for s in rec.call_starts
            )
    return candidates


def plan_no_birds_samples(
    candidates: Sequence[NoBirdsSample],
    counts: dict[str, int],
    esc50_ratio: float,
    seed: int,
) -> list[NoBirdsSample]:
    """Pick ``counts[split]`` samples per split, ``esc50_ratio`` of them from ESC-50.

    Deterministic for a seed. When one source runs short the other fills in; when both do,
    every candidate is used and a warning says how many are missing.
    """
    if not 0.0 <= esc50_ratio <= 1.0:
        raise DatasetError(f"esc50 ratio must be between 0 and 1, got {esc50_ratio}")
    chosen: list[NoBirdsSample] = []
    for split_index, split in enumerate(SPLITS):
        wanted = int(counts.get(split, 0))
        if wanted <= 0:
            continue
        pools = {
            kind: sorted(
                (c for c in candidates if c.split == split and c.source_type == kind),
                key=lambda c: (c.source_path, c.offset),
            )
            for kind in (ESC50, QUIET_SEGMENT)
        }
        rng = np.random.default_rng([seed, split_index])
        for kind in pools:
            pools[kind] = [pools[kind][i] for i in rng.permutation(len(pools[kind]))]
        n_esc = min(int(round(wanted * esc50_ratio)), len(pools[ESC50]))
        n_quiet = min(wanted - n_esc, len(pools[QUIET_SEGMENT]))
        n_esc = min(wanted - n_quiet, len(pools[ESC50]))  # ESC-50 fills a quiet shortfall
        picked = pools[ESC50][:n_esc] + pools[QUIET_SEGMENT][:n_quiet]
        if len(picked) < wanted:
            log.warning(
                "Only %d of %d no_birds samples available for the %s split (%d ESC-50 clips, "
                "%d quiet segments); add an ESC-50 folder or longer recordings for more",
                len(picked), wanted, split, len(pools[ESC50]), len(pools[QUIET_SEGMENT]),
            )
        chosen.extend(sorted(picked, key=lambda c: (c.source_type, c.source_path, c.offset)))
    return chosen


def samples_to_manifest(samples: Sequence[NoBirdsSample]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "file": s.file_name(),
                "source_type": s.source_type,
                "source_path": s.source_path,
                "offset": round(s.offset, 4),
                "split": s.split,
                "category": s.category,
            }
            for s in samples
        ],
        columns=NO_BIRDS_MANIFEST_COLUMNS,
    )


NO_BIRDS_MANIFEST = "manifest.csv"
GENERATION_RECORD = "generation.json"


def read_no_birds_folder(folder: str | Path) -> pd.DataFrame:
    """The manifest of a ``generate_no_birds_samples.py`` folder, validated."""
    folder = Path(folder)
    manifest_path = folder / NO_BIRDS_MANIFEST
    if not manifest_path.is_file():
        raise DatasetError(
            f"Pre-generated no-birds samples not found ('{manifest_path}' is missing). Run "
            f"'python generate_no_birds_samples.py --output_dir {folder}' first, or set "
            "dataset.load_pregenerated_no_birds=false to generate them at start-up."
        )
    table = read_split_table(manifest_path, NO_BIRDS_MANIFEST_COLUMNS)
    # The generator writes bare file names; anything else was not written by it.
    for name in table["file"]:
        plain_file_name(name, f"'{manifest_path}' (column file)")
    return table


# The names file_name() gives; only such files are ever deleted from an output folder.
_GENERATED_NAME = re.compile(r"(esc50|quiet)__.+__\d{7}ms\.wav")


def _remove_stale_samples(output_dir: Path, stale: set[str]) -> int:
    """Delete samples an earlier run of this generator listed and the new plan dropped: bare
    names in its own naming scheme, regular files (never a symlink or a folder)."""
    removed = 0
    for name in sorted(stale):
        target = output_dir / name
        if not _GENERATED_NAME.fullmatch(name) or target.is_symlink() or not target.is_file():
            log.warning("Not removing '%s': not a sample this generator writes", target)
            continue
        target.unlink()
        removed += 1
    return removed


def write_no_birds_folder(
    samples: Sequence[NoBirdsSample],
    output_dir: str | Path,
    cache: DecodedAudioCache,
    clip_duration: float,
    record: dict,
) -> pd.DataFrame:
    """Write each sample as a clip-long WAV plus ``manifest.csv``; idempotent.

    Names derive from the source and offset, so a re-run writes the same names, skips files
    already there, and removes only files that an earlier run of this generator listed but
    the new plan no longer contains. Nothing else in the folder is touched.
    """
    output_dir = Path(output_dir)
    previous = output_dir / NO_BIRDS_MANIFEST
    # Read (and check) the earlier manifest before anything is written.
    earlier = set(read_no_birds_folder(output_dir)["file"]) if previous.is_file() else set()
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = samples_to_manifest(samples)
    if len(set(manifest["file"])) != len(manifest):
        raise DatasetError("two no-birds samples map to one file name; this is a bug")
    clip_samples = int(round(clip_duration * cache.sample_rate))
    written = 0
    for sample in tqdm(samples, desc="Writing no-birds samples", unit="file"):
        target = output_dir / sample.file_name()
        if target.exists():
            continue
        audio = pad_or_crop(
            np.asarray(cache.get(sample.key)), clip_samples,
            int(round(sample.offset * cache.sample_rate)),
        )
        write_wav_atomic(target, audio, cache.sample_rate)
        written += 1
    removed = _remove_stale_samples(output_dir, earlier - set(manifest["file"]))
    if removed:
        log.info("Removed %d samples of an earlier plan", removed)
    save_table_atomic(manifest, previous)
    write_json_atomic(record, output_dir / GENERATION_RECORD)
    log.info("%d no-birds samples in %s (%d new)", len(manifest), output_dir, written)
    return manifest

"""Config -> class list, split manifest and train/val/test window datasets.

The class order is the config's ``allowed_bird_classes`` followed by ``no_birds``; it never
comes from the file system.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from common.skipped_files import SkippedFile
from datasets.audio_cache import DecodedAudioCache
from datasets.augmentation import build_waveform_augment
from datasets.bird_dataset import (
    NO_BIRDS,
    PreparedRecording,
    WindowDataset,
    WindowExample,
    build_examples,
    prepare_recordings,
)
from datasets.esc50_dataset import (
    ensure_esc50,
    esc50_split_manifest,
    load_esc50_metadata,
    no_bird_clips,
)
from datasets.manifest_files import source_roots
from datasets.no_birds import (
    ESC50,
    QUIET_SEGMENT,
    candidate_samples,
    plan_no_birds_samples,
    read_no_birds_folder,
    split_counts,
)
from datasets.split_manifest import (
    MANIFEST_COLUMNS,
    SPLITS,
    DatasetError,
    SourceFile,
    build_split_manifest,
    limit_files_per_class,
    load_manifest,
    scan_species_folders,
)
from datasets.unlabelled import PreparedUnlabelled, prepare_unlabelled
from datasets.windows import window_settings_from_config

log = logging.getLogger(__name__)


def class_names_from_config(dataset_cfg: DictConfig) -> list[str]:
    species = [str(s) for s in dataset_cfg.allowed_bird_classes]
    if not species:
        raise DatasetError("dataset.allowed_bird_classes is empty: list the species folders")
    duplicates = sorted(s for s, n in Counter(species).items() if n > 1)
    if duplicates:
        raise DatasetError(f"dataset.allowed_bird_classes lists {duplicates} more than once")
    if NO_BIRDS in species:
        raise DatasetError(f"'{NO_BIRDS}' is added automatically; remove it from the class list")
    return [*species, NO_BIRDS]


@dataclass
class DataBundle:
    class_names: list[str]
    manifest: pd.DataFrame
    datasets: dict[str, WindowDataset]
    recordings: list[PreparedRecording]
    cache: DecodedAudioCache
    skipped: list[SkippedFile] = field(default_factory=list)
    # dataset.unlabelled_dirs: teacher targets only, never in validation or test.
    unlabelled: list[PreparedUnlabelled] = field(default_factory=list)

    def class_counts(self) -> dict[str, dict[str, int]]:
        counts = {}
        for split, ds in self.datasets.items():
            tally = Counter(ds.labels())
            counts[split] = {name: tally.get(i, 0) for i, name in enumerate(self.class_names)}
        return counts


def bird_manifest(cfg: DictConfig, class_names: list[str],
                  skipped: list[SkippedFile]) -> pd.DataFrame:
    """The bird part of the split manifest, built from the species folders."""
    ds = cfg.dataset
    files = scan_species_folders(ds.bird_data_dir, class_names[:-1], skipped)
    files = limit_files_per_class(files, cfg.debug.files_limit)
    return build_split_manifest(
        files, list(ds.split_ratios), seed=int(cfg.seed), group_regex=ds.group_regex
    )


def esc50_manifest(cfg: DictConfig, skipped: list[SkippedFile]) -> pd.DataFrame | None:
    """ESC-50 clips of non-bird categories, split by src_file; None when unavailable."""
    ds = cfg.dataset
    if float(ds.esc50_no_bird_ratio) <= 0:
        return None
    try:
        esc50_dir = ensure_esc50(Path(ds.esc50_dir), download=bool(ds.esc50_download),
                                 expected_sha256=ds.get("esc50_sha256"))
    except DatasetError as error:
        # Training still works from quiet segments alone; say how to add ESC-50.
        log.warning("ESC-50 not used for no_birds: %s", error)
        return None
    categories = list(ds.esc50_categories) if ds.esc50_categories else None
    clips = no_bird_clips(esc50_dir, categories, skipped)
    return esc50_split_manifest(clips, list(ds.split_ratios), int(cfg.seed))


def esc50_category_map(esc50_dir: Path, manifest: pd.DataFrame) -> dict[str, str]:
    """ESC-50 category of each ESC-50 row's path (for reports and the no-birds manifest)."""
    if not (manifest["source"] == ESC50).any():
        return {}
    meta = load_esc50_metadata(esc50_dir)
    return {f"audio/{name}": str(cat) for name, cat in zip(meta["filename"], meta["category"],
                                                           strict=True)}


def pregenerated_manifest(cfg: DictConfig, birds: pd.DataFrame,
                          skipped: list[SkippedFile]) -> pd.DataFrame:
    """Rows for ``generate_no_birds_samples.py`` output, keeping each file's own split.

    A quiet segment whose source recording sits in another split of this run's manifest
    would leak training audio into evaluation (or back): it is dropped and reported.
    """
    ds = cfg.dataset
    folder = Path(ds.pregenerated_no_birds_dir)
    table = read_no_birds_folder(folder)
    bird_split = dict(zip(birds["path"], birds["split"], strict=True))
    rows = []
    for row in table.itertuples(index=False):
        if row.source_type == QUIET_SEGMENT and row.source_path in bird_split:
            if bird_split[row.source_path] != row.split:
                skipped.append(SkippedFile(
                    str(folder / row.file),
                    f"its source recording is in the {bird_split[row.source_path]} split of "
                    "this run; regenerate no-birds samples with the same seed and ratios",
                    "no_birds",
                ))
                continue
        rows.append({
            "path": row.file, "label": NO_BIRDS, "group": f"no_birds:{row.source_path}",
            "split": row.split, "source": "no_birds",
        })
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def build_manifest(cfg: DictConfig, class_names: list[str], skipped: list[SkippedFile],
                   manifest_path: str | Path | None = None) -> pd.DataFrame:
    """Reuse a given manifest (resumed runs, later stages) or build one from the folders."""
    ds = cfg.dataset
    if manifest_path:
        manifest = load_manifest(manifest_path)
        unknown = sorted(set(manifest["label"]) - set(class_names))
        if unknown:
            raise DatasetError(
                f"Manifest '{manifest_path}' has labels {unknown} that are not in the class "
                f"list {class_names}; use a manifest made for these classes."
            )
        return manifest
    parts = [bird_manifest(cfg, class_names, skipped)]
    if ds.load_pregenerated_no_birds:
        parts.append(pregenerated_manifest(cfg, parts[0], skipped))
    else:
        esc50 = esc50_manifest(cfg, skipped)
        if esc50 is not None:
            parts.append(esc50)
    return pd.concat(parts, ignore_index=True)


def build_data(cfg: DictConfig, manifest_path: str | Path | None = None) -> DataBundle:
    ds = cfg.dataset
    class_names = class_names_from_config(ds)
    skipped: list[SkippedFile] = []
    manifest = build_manifest(cfg, class_names, skipped, manifest_path or ds.split_manifest)
    cache = DecodedAudioCache(ds.cache_dir, int(ds.target_sr))
    settings = window_settings_from_config(ds)
    recordings = prepare_recordings(
        manifest, source_roots(ds), cache, settings, skipped, num_workers=int(ds.num_workers)
    )
    if not (manifest_path or ds.split_manifest):
        manifest = resplit_without_unusable(cfg, manifest, recordings, skipped)
    if not any(r.source == "bird" for r in recordings):
        raise DatasetError(
            "No usable audio remains after skipping bad files; see the warnings above "
            "(every file was unreadable, empty, too short or not audio)."
        )
    examples = {split: build_examples(recordings, class_names, split) for split in SPLITS}
    if not ds.load_pregenerated_no_birds:
        for split, sample in online_no_birds(cfg, recordings, manifest, examples, class_names):
            examples[split].append(sample)
    datasets = {}
    augment_cfg = ds.augmentation
    for split in SPLITS:
        training = split == "train" and bool(augment_cfg.enabled)
        no_birds = class_names.index(NO_BIRDS)
        datasets[split] = WindowDataset(
            examples[split],
            cache,
            settings.clip_duration,
            max_shift_s=float(augment_cfg.time_shift_s) if training else 0.0,
            augment=build_waveform_augment(augment_cfg) if training else None,
            # Only this split's own no_birds windows, so nothing leaks across splits.
            background=[e for e in examples[split] if e.label == no_birds] if training else (),
            background_prob=float(augment_cfg.background_prob),
            background_snr_db=(float(augment_cfg.background_snr_db[0]),
                               float(augment_cfg.background_snr_db[1])),
            speed_perturb=float(augment_cfg.get("speed_perturb") or 0.0) if training else 0.0,
        )
    unlabelled = prepare_unlabelled(list(ds.get("unlabelled_dirs") or []), manifest,
                                    source_roots(cfg.dataset), cache, skipped)
    bundle = DataBundle(class_names, manifest, datasets, recordings, cache, skipped, unlabelled)
    _check_usable(bundle)
    return bundle


def resplit_without_unusable(cfg: DictConfig, manifest: pd.DataFrame,
                             recordings: list[PreparedRecording],
                             skipped: list[SkippedFile]) -> pd.DataFrame:
    """The split of the usable files only, so an unreadable file shifts nobody's split.

    The split is dealt over the file list; a file that turns out unusable would otherwise
    hold a place and change which recordings land in validation and test. The recordings
    take the new split (windows and no_birds choices follow it).
    """
    usable = {(r.source, r.path) for r in recordings}
    keep = [(s, p) in usable for s, p in zip(manifest["source"], manifest["path"], strict=True)]
    if all(keep):
        return manifest
    kept = manifest[keep]
    if kept.empty:
        recordings.clear()
        return kept.reset_index(drop=True)  # nothing usable: the caller says so
    ratios, seed = list(cfg.dataset.split_ratios), int(cfg.seed)
    parts = []
    for source, rows in kept.groupby("source", sort=False):
        files = [SourceFile(p, lab, str(source)) for p, lab in zip(rows["path"], rows["label"],
                                                                   strict=True)]
        if source == "bird":
            parts.append(build_split_manifest(files, ratios, seed=seed,
                                              group_regex=cfg.dataset.group_regex))
        elif source == ESC50:
            parts.append(esc50_split_manifest(files, ratios, seed))
        else:
            parts.append(rows)  # pre-generated no_birds clips keep the split they were made in
    resplit = pd.concat(parts, ignore_index=True)
    # A pre-generated quiet segment must still sit in its source recording's split.
    bird_split = {f"no_birds:{p}": sp for p, sp, so in zip(
        resplit["path"], resplit["split"], resplit["source"], strict=True) if so == "bird"}
    moved = [so == "no_birds" and g in bird_split and bird_split[g] != sp for so, g, sp in zip(
        resplit["source"], resplit["group"], resplit["split"], strict=True)]
    for path in resplit["path"][moved]:
        skipped.append(SkippedFile(path, "its source recording moved to another split once "
                                   "unusable files were left out; regenerate no-birds samples",
                                   "no_birds"))
    resplit = resplit[[not m for m in moved]].reset_index(drop=True)
    split_of = dict(zip(zip(resplit["source"], resplit["path"], strict=True), resplit["split"],
                        strict=True))
    recordings[:] = [r for r in recordings if (r.source, r.path) in split_of]
    for recording in recordings:
        recording.split = split_of[(recording.source, recording.path)]
    log.info("Split made again without the %d unusable files", len(keep) - sum(keep))
    return resplit


def no_birds_counts(cfg: DictConfig, examples: dict[str, list[WindowExample]],
                    n_species: int) -> dict[str, int]:
    """no_birds windows per split: the configured total dealt by the split ratios, else the
    mean per-species count of each split (so the extra class neither dominates nor starves)."""
    ds = cfg.dataset
    if ds.num_no_bird_samples is not None:
        return split_counts(int(ds.num_no_bird_samples), list(ds.split_ratios))
    return {
        split: int(np.ceil(len(items) / max(1, n_species))) for split, items in examples.items()
    }


def online_no_birds(cfg: DictConfig, recordings: list[PreparedRecording],
                    manifest: pd.DataFrame, examples: dict[str, list[WindowExample]],
                    class_names: list[str]) -> Iterator[tuple[str, WindowExample]]:
    """The same selection generate_no_birds_samples.py makes, kept in memory."""
    ds = cfg.dataset
    categories = esc50_category_map(Path(ds.esc50_dir), manifest)
    candidates = candidate_samples(recordings, categories)
    counts = no_birds_counts(cfg, examples, len(class_names) - 1)
    plan = plan_no_birds_samples(candidates, counts, float(ds.esc50_no_bird_ratio), int(cfg.seed))
    label = class_names.index(NO_BIRDS)
    for sample in plan:
        kind = "esc50" if sample.source_type == ESC50 else "quiet"
        yield sample.split, WindowExample(sample.key, sample.offset, label, sample.source_path,
                                          kind)


def _check_usable(bundle: DataBundle) -> None:
    counts = bundle.class_counts()
    if not len(bundle.datasets["train"]):
        raise DatasetError("The training split has no examples; add recordings or check the splits")
    for split, per_class in counts.items():
        log.info("%-5s windows per class: %s", split, per_class)
    missing = [name for name, n in counts["train"].items() if n == 0]
    species_missing = [name for name in missing if name != NO_BIRDS]
    if species_missing:
        # A model with a class it never saw would be saved as if it knew it.
        raise DatasetError(
            f"Species {species_missing} have no usable training windows (their recordings "
            "are missing, unreadable or all in the validation/test splits; see "
            "skipped_files.csv). Add recordings or remove them from "
            "dataset.allowed_bird_classes."
        )
    if missing:
        log.warning("Classes with no training windows: %s", missing)

"""Config -> class list, split manifest and train/val/test window datasets.

The class order is the config's ``allowed_bird_classes`` followed by ``no_birds``; it never
comes from the file system.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from datasets.audio_cache import DecodedAudioCache
from datasets.augmentation import build_waveform_augment
from datasets.bird_dataset import (
    NO_BIRDS,
    PreparedRecording,
    WindowDataset,
    WindowSettings,
    build_examples,
    prepare_recordings,
)
from datasets.split_manifest import (
    SPLITS,
    DatasetError,
    SkippedFile,
    build_split_manifest,
    limit_files_per_class,
    load_manifest,
    scan_species_folders,
)

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


def window_settings_from_config(dataset_cfg: DictConfig) -> WindowSettings:
    return WindowSettings(
        clip_duration=float(dataset_cfg.clip_duration),
        extract_calls=bool(dataset_cfg.extract_calls),
        call_band_hz=(float(dataset_cfg.call_band_hz[0]), float(dataset_cfg.call_band_hz[1])),
        call_threshold_k=float(dataset_cfg.call_threshold_k),
        energy_threshold_factor=float(dataset_cfg.energy_threshold_factor),
        quiet_segments_per_file=int(dataset_cfg.quiet_segments_per_file),
    )


@dataclass
class DataBundle:
    class_names: list[str]
    manifest: pd.DataFrame
    datasets: dict[str, WindowDataset]
    recordings: list[PreparedRecording]
    cache: DecodedAudioCache
    skipped: list[SkippedFile] = field(default_factory=list)

    def class_counts(self) -> dict[str, dict[str, int]]:
        counts = {}
        for split, ds in self.datasets.items():
            tally = Counter(ds.labels())
            counts[split] = {name: tally.get(i, 0) for i, name in enumerate(self.class_names)}
        return counts


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
    files = scan_species_folders(ds.bird_data_dir, class_names[:-1], skipped)
    files = limit_files_per_class(files, cfg.debug.files_limit)
    return build_split_manifest(
        files, list(ds.split_ratios), seed=int(cfg.seed), group_regex=ds.group_regex
    )


def build_data(cfg: DictConfig, manifest_path: str | Path | None = None) -> DataBundle:
    ds = cfg.dataset
    class_names = class_names_from_config(ds)
    skipped: list[SkippedFile] = []
    manifest = build_manifest(cfg, class_names, skipped, manifest_path or ds.split_manifest)
    roots = {"bird": Path(ds.bird_data_dir)}
    cache = DecodedAudioCache(ds.cache_dir, int(ds.target_sr))
    settings = window_settings_from_config(ds)
    recordings = prepare_recordings(
        manifest, roots, cache, settings, skipped, num_workers=int(ds.num_workers)
    )
    if not recordings:
        raise DatasetError(
            "No usable audio remains after skipping bad files; see the warnings above "
            "(every file was unreadable, empty, too short or not audio)."
        )
    datasets = {}
    for split in SPLITS:
        species_examples = build_examples(recordings, class_names, split, 0, int(cfg.seed))
        per_species = Counter(e.label for e in species_examples)
        share = float(ds.split_ratios[SPLITS.index(split)]) / float(sum(ds.split_ratios))
        quiet_limit = _no_birds_target(ds, per_species, len(class_names) - 1, share)
        examples = build_examples(recordings, class_names, split, quiet_limit, int(cfg.seed))
        augment_cfg = ds.augmentation
        training = split == "train" and bool(augment_cfg.enabled)
        datasets[split] = WindowDataset(
            examples,
            cache,
            settings.clip_duration,
            max_shift_s=float(augment_cfg.time_shift_s) if training else 0.0,
            augment=build_waveform_augment(augment_cfg) if training else None,
        )
    bundle = DataBundle(class_names, manifest, datasets, recordings, cache, skipped)
    _check_usable(bundle)
    return bundle


def _no_birds_target(ds: DictConfig, per_species: Counter, n_species: int, share: float) -> int:
    """How many quiet no_birds windows a split gets: its share of the configured number, else
    the mean per-species count (so the extra class neither dominates nor starves)."""
    if ds.num_no_bird_samples is not None:
        return int(round(int(ds.num_no_bird_samples) * share))
    return int(np.ceil(sum(per_species.values()) / max(1, n_species)))


def _check_usable(bundle: DataBundle) -> None:
    counts = bundle.class_counts()
    if not len(bundle.datasets["train"]):
        raise DatasetError("The training split has no examples; add recordings or check the splits")
    for split, per_class in counts.items():
        log.info("%-5s windows per class: %s", split, per_class)
    missing = [name for name, n in counts["train"].items() if n == 0]
    if missing:
        log.warning("Classes with no training windows: %s", missing)

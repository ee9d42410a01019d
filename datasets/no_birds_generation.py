"""Offline no-birds generation: the planning code of training, written to a folder.

It composes the training config (so sample rate, clip length, split ratios, grouping and
seed default to exactly what ``train.py`` uses) and writes what the online mode would pick.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from common.skipped_files import SkippedFile
from datasets.audio_cache import DecodedAudioCache
from datasets.bird_dataset import prepare_recordings
from datasets.dataset_factory import (
    bird_manifest,
    class_names_from_config,
    esc50_category_map,
    esc50_manifest,
    resplit_without_unusable,
)
from datasets.esc50_dataset import ensure_esc50
from datasets.manifest_files import source_roots
from datasets.no_birds import (
    candidate_samples,
    plan_no_birds_samples,
    split_counts,
    write_no_birds_folder,
)
from datasets.split_manifest import DatasetError
from datasets.windows import window_settings_from_config

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def training_config(overrides: list[str]) -> DictConfig:
    """The composed training config with ``overrides`` (the generator's own arguments)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="bird_classification", overrides=overrides)


def species_folders(bird_dir: Path) -> list[str]:
    if not bird_dir.is_dir():
        raise DatasetError(
            f"Bird dataset folder '{bird_dir}' does not exist; pass --bird_dir <folder with "
            "one sub-folder per species>"
        )
    names = sorted(p.name for p in bird_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DatasetError(f"'{bird_dir}' has no species sub-folders")
    return names


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def generate_no_birds(
    cfg: DictConfig, output_dir: str | Path, num_samples: int, esc50_ratio: float
) -> tuple[pd.DataFrame, list[SkippedFile]]:
    """Plan and write ``num_samples`` no-birds clips; returns the manifest and skipped files."""
    ds = cfg.dataset
    output_dir = Path(output_dir)
    if num_samples < 1:
        raise DatasetError(f"--num_samples must be at least 1, got {num_samples}")
    if not 0.0 <= esc50_ratio <= 1.0:
        raise DatasetError(f"--esc50_ratio must be between 0 and 1, got {esc50_ratio}")
    for source in (Path(ds.bird_data_dir), Path(ds.esc50_dir)):
        if source.exists() and _inside(output_dir, source):
            raise DatasetError(
                f"--output_dir '{output_dir}' is inside the input folder '{source}'; generated "
                "data never goes into input data: choose another folder"
            )
    if esc50_ratio > 0:
        # Fail here rather than silently fall back: the user asked for ESC-50 samples.
        ensure_esc50(Path(ds.esc50_dir), download=bool(ds.esc50_download),
                     expected_sha256=ds.get("esc50_sha256"))
    skipped: list[SkippedFile] = []
    class_names = class_names_from_config(ds)
    parts = [bird_manifest(cfg, class_names, skipped)]
    esc50 = esc50_manifest(cfg, skipped) if esc50_ratio > 0 else None
    if esc50 is not None:
        parts.append(esc50)
    manifest = pd.concat(parts, ignore_index=True)
    cache = DecodedAudioCache(ds.cache_dir, int(ds.target_sr))
    recordings = prepare_recordings(
        manifest, source_roots(ds), cache, window_settings_from_config(ds), skipped,
        num_workers=int(ds.num_workers),
    )
    # The same split training makes: of the usable files only.
    manifest = resplit_without_unusable(cfg, manifest, recordings, skipped)
    candidates = candidate_samples(recordings, esc50_category_map(Path(ds.esc50_dir), manifest))
    counts = split_counts(num_samples, list(ds.split_ratios))
    plan = plan_no_birds_samples(candidates, counts, esc50_ratio, int(cfg.seed))
    if not plan:
        raise DatasetError(
            "No no-birds material found: the recordings have no quiet stretch of a clip's "
            "length and no ESC-50 clips were available"
        )
    record = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "num_samples": num_samples,
        "esc50_ratio": esc50_ratio,
        "energy_threshold_factor": float(ds.energy_threshold_factor),
        "seed": int(cfg.seed),
        "sample_rate": int(ds.target_sr),
        "clip_duration": float(ds.clip_duration),
        "split_ratios": list(ds.split_ratios),
        "group_regex": ds.group_regex,
        "bird_dir": str(ds.bird_data_dir),
        "esc50_dir": str(ds.esc50_dir),
        "species": class_names[:-1],
        "written": len(plan),
        "skipped_files": len(skipped),
    }
    table = write_no_birds_folder(plan, output_dir, cache, float(ds.clip_duration), record)
    return table, skipped

"""Compose the real Hydra configs for tests, pointed at temporary folders."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.conftest import REPO_ROOT


def compose_config(overrides: list[str], config_name: str = "bird_classification",
                   config_dir: Path | None = None) -> DictConfig:
    with initialize_config_dir(str(config_dir or REPO_ROOT / "config"), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def fast_overrides(bird_dir: Path, tmp: Path, epochs: int = 2) -> list[str]:
    """Small, quick settings that still exercise every stage."""
    return [
        f"dataset.bird_data_dir={bird_dir}",
        f"dataset.cache_dir={tmp / 'cache'}",
        "dataset.num_workers=0",
        f"training.epochs={epochs}",
        "training.batch_size=16",
        f"training.save_path={tmp / 'best_copy.pt'}",
        f"paths.log_dir={tmp / 'logs'}",
    ]

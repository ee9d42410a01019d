"""Standard supervised training: python train.py [overrides], e.g. training.epochs=50."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.errors import exit_on_user_error

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="config", config_name="bird_classification")
def main(cfg: DictConfig) -> None:
    from training.run import run_training

    with exit_on_user_error(log):
        run_training(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    sys.exit(main())

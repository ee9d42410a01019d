"""The accuracy scoreboard: k-fold cross-validation over recordings, student vs BirdNET.

    python evaluate.py dataset.bird_data_dir=... 'dataset.allowed_bird_classes=[...]'
    python evaluate.py --config-name=evaluate_distillation evaluation.train_recordings_per_class=6
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.errors import exit_on_user_error

log = logging.getLogger("evaluate")


@hydra.main(version_base="1.3", config_path="config", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from evaluation.scoreboard import run_evaluation

    with exit_on_user_error(log):
        run_evaluation(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    sys.exit(main())

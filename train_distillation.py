"""Train the student from hard labels and what BirdNET knows (or with focal losses).

With no --config-name it runs the default recipe, embedding_distillation (the best one
measured; see evaluation/README.md):

    python train_distillation.py 'dataset.unlabelled_dirs=[field_recordings]'
    python train_distillation.py --config-name=distillation_config
    python train_distillation.py --config-name=focal_loss_config training.alpha=0.7
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.errors import exit_on_user_error

log = logging.getLogger("train_distillation")


@hydra.main(version_base="1.3", config_path="distillation/configs",
            config_name="embedding_distillation")
def main(cfg: DictConfig) -> None:
    from distillation.training_setup import distillation_loss_factory
    from training.run import run_training

    with exit_on_user_error(log):
        run_training(cfg, HydraConfig.get().runtime.output_dir, distillation_loss_factory)


if __name__ == "__main__":
    sys.exit(main())

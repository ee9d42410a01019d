"""Pre-training on teacher targets and fine-tuning from a pre-trained backbone.

``training.stage=pretrain`` (train_distillation.py) trains the student on BirdNET's targets
alone, labels ignored (``distillation.TeacherTargetsLoss``), over every window it is given:
the labelled recordings' windows and ``dataset.unlabelled_dirs``. Its checkpoint is an
ordinary one; ``model.pretrained=PATH`` starts a later run from it. The backbone (front-end,
conv blocks, GRU) and the projection head are copied; the class head is copied only when the
class list is the same, in the same order, and re-initialised otherwise, so a user with a new
species list trains only what is new, from a backbone that already hears birds.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from model_checkpoint import CheckpointError, read_checkpoint

log = logging.getLogger(__name__)

PRETRAIN = "pretrain"
SUPERVISED = "supervised"
STAGES = (SUPERVISED, PRETRAIN)
# Modules that map to classes: re-initialised when the class list differs.
CLASS_HEADS = ("head", "classifier")


def check_stage(cfg: DictConfig, uses_teacher: bool) -> None:
    """``training.stage`` and ``dataset.unlabelled_dirs`` need a teacher (train_distillation.py)."""
    from common.errors import ConfigError

    stage = str(cfg.training.get("stage", SUPERVISED))
    if stage not in STAGES:
        raise ConfigError(f"training.stage={stage} is not one of {', '.join(STAGES)}")
    if uses_teacher:
        return
    if stage == PRETRAIN:
        raise ConfigError("training.stage=pretrain learns from BirdNET's targets: run it with "
                          "train_distillation.py (with dataset.soft_labels_path)")
    if cfg.dataset.get("unlabelled_dirs"):
        raise ConfigError("dataset.unlabelled_dirs carry teacher targets only: use "
                          "train_distillation.py, or leave dataset.unlabelled_dirs empty")


def _is_class_head(name: str) -> bool:
    return name.split(".", 1)[0] in CLASS_HEADS


def load_pretrained(model: nn.Module, path: str | Path, model_name: str,
                    class_names: list[str], audio: dict) -> dict:
    """Copy a pre-trained checkpoint's weights into ``model``; returns what was done.

    CheckpointError when the checkpoint is of another architecture or audio setting (its
    backbone would not fit, or would hear differently).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    if checkpoint.model_name != model_name:
        raise CheckpointError(
            f"model.pretrained={path} is a {checkpoint.model_name} model, this run builds "
            f"{model_name}; set model={checkpoint.model_name} (and its settings)"
        )
    theirs = checkpoint.audio.as_dict()
    ours = {k: audio.get(k) for k in ("sample_rate", "clip_duration")}
    if {k: float(v) for k, v in theirs.items()} != {k: float(v) for k, v in ours.items()}:
        raise CheckpointError(
            f"model.pretrained={path} was trained on {theirs}, this run uses {ours}; set "
            "dataset.target_sr and dataset.clip_duration to match"
        )
    same_classes = list(checkpoint.class_names) == list(class_names)
    own = model.state_dict()
    loaded, reset, mismatched, unused = {}, [], [], []
    for name, tensor in checkpoint.state_dict.items():
        if name not in own:
            unused.append(name)
        elif _is_class_head(name) and not same_classes:
            reset.append(name)
        elif own[name].shape != tensor.shape:
            mismatched.append(f"{name} {tuple(tensor.shape)} vs {tuple(own[name].shape)}")
        else:
            loaded[name] = tensor
    if mismatched:
        raise CheckpointError(
            f"model.pretrained={path} does not fit this model ({'; '.join(mismatched[:4])}): "
            "the architecture settings differ; use the model.* settings it was trained with"
        )
    model.load_state_dict(loaded, strict=False)
    missing = sorted(set(own) - set(loaded))
    log.info(
        "Started from %s: %d tensors copied; class head %s; not in the checkpoint: %s",
        path, len(loaded),
        "copied (same classes)" if same_classes else
        f"re-initialised (classes {checkpoint.class_names} -> {class_names})",
        missing or "nothing",
    )
    return {"path": str(path), "copied": sorted(loaded), "reinitialised": missing,
            "unused": unused, "same_classes": same_classes}

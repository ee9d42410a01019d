"""What train_distillation.py adds to the shared training run: the loss and the soft labels.

``distillation.alpha`` and ``distillation.temperature`` are the home of those settings;
``training.alpha`` and ``training.temperature`` (as the specification also names them) are
aliases that, when set, take precedence.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from datasets.dataset_factory import DataBundle
from distillation.datasets.soft_label_dataset import SoftLabelWindowDataset
from distillation.losses import build_loss, needs_teacher
from distillation.losses.class_weights import format_class_weights, resolve_class_weights
from distillation.soft_labels import SoftLabelStore
from training.run import ConfigError
from training.trainer import LossFn

log = logging.getLogger(__name__)


def resolved_alpha_temperature(cfg: DictConfig) -> tuple[float, float]:
    """(alpha, temperature): training.* aliases win over distillation.* when set."""
    values = []
    for key in ("alpha", "temperature"):
        home = cfg.distillation[key]
        alias = cfg.training.get(key)
        if alias is not None and home is not None and float(alias) != float(home):
            log.info("training.%s=%s overrides distillation.%s=%s", key, alias, key, home)
        values.append(float(alias if alias is not None else home))
    alpha, temperature = values
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation.alpha must be within [0, 1], got {alpha}")
    if temperature <= 0:
        raise ConfigError(f"distillation.temperature must be positive, got {temperature}")
    return alpha, temperature


def attach_soft_labels(cfg: DictConfig, data: DataBundle) -> SoftLabelStore:
    """Wrap every split's dataset so each window carries the teacher's logits."""
    store = SoftLabelStore(cfg.dataset.soft_labels_path)
    sources = dict(zip(data.manifest["path"], data.manifest["source"], strict=True))
    for split, dataset in list(data.datasets.items()):
        data.datasets[split] = SoftLabelWindowDataset(
            dataset, sources, store, data.class_names, str(cfg.dataset.missing_soft_labels),
            trust_bird_labels=bool(cfg.distillation.trust_bird_labels),
            confidence_threshold=float(cfg.distillation.confidence_threshold),
        )
    log.info("Soft labels from %s (BirdNET %s, hop %.2f s)", store.root, store.birdnet_version,
             store.hop)
    return store


def class_weights_for(cfg: DictConfig, data: DataBundle):
    """``loss.class_weights``: null, "auto" (from the training windows' labels) or a list."""
    loss = cfg.loss
    train_labels = data.datasets["train"].labels()
    result = resolve_class_weights(
        loss.class_weights, labels=train_labels, class_names=data.class_names,
        alpha_scaling=float(loss.alpha_scaling), method=str(loss.weight_method),
        beta=float(loss.beta), cache_dir=Path(cfg.paths.cache_dir) / "class_weights",
        cache_max_age_hours=loss.cache_max_age_hours,
        force_recalculate=bool(loss.force_recalculate),
        save_cache=bool(cfg.training.save_weight_cache),
        use_fast_sampling=bool(loss.use_fast_sampling),
        samples=int(loss.weight_calculation_samples), seed=int(cfg.seed),
        sampling_strategy=str(loss.sampling_strategy),
    )
    if result.weights is not None and cfg.training.log_class_weights:
        log.info("Class weights (%s):\n%s", result.source,
                 format_class_weights(result, data.class_names))
    return result


def distillation_loss_factory(cfg: DictConfig, data: DataBundle) -> LossFn:
    """The configured loss; attaches soft labels when the loss uses the teacher."""
    alpha, temperature = resolved_alpha_temperature(cfg)
    loss_type = str(cfg.loss.type)
    if needs_teacher(loss_type, alpha):
        if not cfg.dataset.soft_labels_path:
            raise ConfigError(
                f"loss.type={loss_type} learns from BirdNET's soft labels: set "
                "dataset.soft_labels_path (run extract_soft_labels.py first), or use "
                "--config-name=pure_focal_config for a loss without a teacher."
            )
        attach_soft_labels(cfg, data)
    weights = class_weights_for(cfg, data).weights
    return build_loss(cfg.loss, class_weights=weights, n_classes=len(data.class_names),
                      alpha=alpha, temperature=temperature)

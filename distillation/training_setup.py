"""What train_distillation.py adds to the shared training run: the loss and the soft labels.

``distillation.alpha`` and ``distillation.temperature`` are the home of those settings;
``training.alpha`` and ``training.temperature`` (as the specification also names them) are
aliases that, when set, take precedence.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from birdnet.teacher import EMBEDDING_DIM, BirdNetTeacher
from common.errors import ConfigError
from datasets.dataset_factory import DataBundle
from datasets.unlabelled import UNLABELLED_KEY_PREFIX
from distillation.datasets.soft_label_dataset import SoftLabelWindowDataset, soft_label_key
from distillation.datasets.teacher_windows import (
    CombinedTrainingSet,
    TeacherWindowDataset,
    labelled_side_weights,
)
from distillation.losses import build_loss, needs_teacher
from distillation.losses.class_weights import format_class_weights, resolve_class_weights
from distillation.losses.embedding import TeacherTargetsLoss, embedding_statistics
from distillation.probe_teacher import (
    ProbeTeacher,
    ProbeUnavailable,
    check_teacher_classifier,
    fit_probe_teacher,
)
from distillation.soft_labels import SoftLabelStore
from training.pretrain import PRETRAIN
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


def attach_soft_labels(cfg: DictConfig, data: DataBundle,
                       embeddings: bool = False) -> SoftLabelStore:
    """Wrap every split's dataset so each window carries the teacher's logits (and, with
    ``embeddings``, BirdNET's embedding)."""
    store = SoftLabelStore(cfg.dataset.soft_labels_path)
    if embeddings:
        store.require("embedding", "distillation.embedding_weight > 0 (or "
                      "distillation.teacher_classifier=linear_probe)")
    sources = dict(zip(data.manifest["path"], data.manifest["source"], strict=True))
    for split, dataset in list(data.datasets.items()):
        data.datasets[split] = SoftLabelWindowDataset(
            dataset, sources, store, data.class_names, str(cfg.dataset.missing_soft_labels),
            trust_bird_labels=bool(cfg.distillation.trust_bird_labels),
            confidence_threshold=float(cfg.distillation.confidence_threshold),
            embeddings=embeddings,
        )
    log.info("Soft labels from %s (BirdNET %s, hop %.2f s)", store.root, store.birdnet_version,
             store.hop)
    return store


def class_weights_for(cfg: DictConfig, data: DataBundle):
    """``loss.class_weights``: null, "auto" (from the training windows' labels) or a list."""
    loss = cfg.loss
    # Teacher-only windows (label -1) carry no class.
    train_labels = [label for label in data.datasets["train"].labels() if label >= 0]
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


def training_side_audio(data: DataBundle) -> dict[str, str]:
    """Soft-label key -> decoded-audio key of every file on this run's training side."""
    sides = {}
    for rec in data.recordings:
        key = soft_label_key(rec.source, rec.path)
        if rec.split == "train" and key is not None:
            sides[key] = rec.key
    sides.update({item.key: item.cache_key for item in data.unlabelled})
    return sides


def labelled_record_keys(cfg: DictConfig, data: DataBundle, store: SoftLabelStore) -> None:
    """Unlabelled files that lie in the species folders take their labelled record's key.

    Extraction labels such a file once, as the labelled file (``unlabelled_dirs`` may include
    the dataset itself); in a run that does not use it as labelled (a few-shot fold keeps
    only N recordings per species) it is unlabelled audio, and its teacher targets are under
    its path in the species folders.
    """
    bird_root = Path(str(cfg.dataset.bird_data_dir)).resolve()
    resolved = []
    for item in data.unlabelled:
        if not store.has(item.key):
            path = Path(item.path).resolve()
            if path.is_relative_to(bird_root):
                alias = path.relative_to(bird_root).as_posix()
                if store.has(alias):
                    item = dataclasses.replace(item, key=alias)
        resolved.append(item)
    data.unlabelled = resolved


def add_teacher_windows(cfg: DictConfig, data: DataBundle, store: SoftLabelStore,
                        embeddings: bool, all_windows: bool,
                        probe: ProbeTeacher | None = None) -> TeacherWindowDataset:
    """Append teacher-only windows to the training split (see teacher_windows.py)."""
    labelled_record_keys(cfg, data, store)
    sides = training_side_audio(data)
    keys = [item.key for item in data.unlabelled]
    if all_windows:
        keys = [key for key in sides if not key.startswith(UNLABELLED_KEY_PREFIX)] + keys
        keys = list(dict.fromkeys(keys))  # an unlabelled file may carry a labelled key
    missing = [key for key in keys if not store.has(key)]
    if missing:
        log.warning(
            "%d of %d files have no soft labels and add no teacher windows (e.g. %s); run "
            "extract_soft_labels.py with --unlabelled_dir for each unlabelled folder",
            len(missing), len(keys), missing[:3],
        )
    teacher = TeacherWindowDataset(
        keys, sides, store, data.cache, data.class_names, float(cfg.dataset.clip_duration),
        embeddings=embeddings, view_prob=float(cfg.distillation.view_prob),
        confidence_threshold=float(cfg.distillation.confidence_threshold),
        probe=probe.logits if probe is not None else None,
    )
    labelled = data.datasets["train"]
    weights = None
    share = cfg.distillation.get("labelled_share")
    if share is not None:
        own_keys = {soft_label_key(rec.source, rec.path) for rec in data.recordings
                    if rec.split == "train"}
        weights = labelled_side_weights(len(labelled), teacher, own_keys, float(share))
        if weights is None:
            log.warning("distillation.labelled_share=%s has no effect: the run has no "
                        "unlabelled pool or no labelled windows", share)
        else:
            log.info("Each epoch draws %.0f%% of its windows from the labelled recordings",
                     100 * float(share))
    data.datasets["train"] = CombinedTrainingSet(labelled, teacher, weights)
    log.info("Teacher-only training windows: %d (%d files; %d unlabelled files)", len(teacher),
             len({item.key for item in teacher.items}), len(data.unlabelled))
    return teacher


def attach_probe_teacher(cfg: DictConfig, data: DataBundle,
                         store: SoftLabelStore) -> ProbeTeacher | None:
    """Fit the linear-probe teacher; its logits replace BirdNET's on the labelled training
    windows too (validation keeps BirdNET's: the head never sees validation windows).

    None, with a warning, when some class has no labelled window to fit it on: the run goes
    on without the probe's soft term rather than stop (a probe that never saw no_birds would
    call every window a species).
    """
    train = data.datasets["train"]
    sources = dict(zip(data.manifest["path"], data.manifest["source"], strict=True))
    try:
        probe = fit_probe_teacher(cfg, train, sources, store, data.class_names,
                                  data.recordings)
    except ProbeUnavailable as error:
        log.warning("%s Training goes on without it: windows without a label learn BirdNET's "
                    "embedding only (no class term).", error)
        return None
    seen = train.has_embedding
    if seen.any():
        train.teacher_logits[seen] = probe.logits(train.teacher_embedding[seen])
    return probe


def check_embedding_dim(cfg: DictConfig) -> None:
    dim = int(cfg.model.get("embedding_dim") or 0)
    if dim != EMBEDDING_DIM:
        raise ConfigError(
            f"distillation.embedding_weight > 0 (or distillation.birdnet_logit_weight or "
            f"distillation.embedding_contrastive_weight > 0) distils BirdNET's "
            f"{EMBEDDING_DIM}-d embedding, "
            f"but model.embedding_dim={dim}: set model.embedding_dim={EMBEDDING_DIM}"
        )


def distillation_loss_factory(cfg: DictConfig, data: DataBundle) -> LossFn:
    """The configured loss; attaches soft labels when the loss uses the teacher.

    With ``distillation.embedding_weight > 0``, teacher-only windows
    (``distillation.all_windows``, ``dataset.unlabelled_dirs``) or ``training.stage=pretrain``
    the loss is a :class:`TeacherTargetsLoss` around the configured one.
    """
    alpha, temperature = resolved_alpha_temperature(cfg)
    loss_type = str(cfg.loss.type)
    pretrain = str(cfg.training.stage) == PRETRAIN
    embedding_weight = float(cfg.distillation.embedding_weight)
    logit_weight = float(cfg.distillation.get("birdnet_logit_weight") or 0.0)
    contrastive_weight = float(cfg.distillation.get("embedding_contrastive_weight") or 0.0)
    # Each embedding term reads BirdNET's embedding through the projection head.
    uses_embedding = embedding_weight > 0 or logit_weight > 0 or contrastive_weight > 0
    probe_teacher = check_teacher_classifier(
        str(cfg.distillation.get("teacher_classifier", "birdnet"))) == "linear_probe"
    all_windows = bool(cfg.distillation.all_windows) or pretrain
    extended = uses_embedding or all_windows or bool(data.unlabelled)
    if probe_teacher and pretrain:
        log.warning("training.stage=pretrain has no labels to fit the linear-probe teacher on "
                    "(distillation.teacher_classifier=linear_probe): pre-training learns "
                    "BirdNET's embedding only, with no class term")
    if str(cfg.training.monitor) == "val_embedding_cosine" and embedding_weight == 0:
        raise ConfigError("training.monitor=val_embedding_cosine needs embedding distillation: "
                          "set distillation.embedding_weight > 0 (and model.embedding_dim=1024)")
    if pretrain and alpha == 0 and not uses_embedding:
        raise ConfigError("training.stage=pretrain learns from teacher targets alone: set "
                          "distillation.embedding_weight > 0 or distillation.alpha > 0")
    if probe_teacher and not (alpha > 0 or needs_teacher(loss_type, alpha)):
        log.warning("distillation.teacher_classifier=linear_probe has no effect with "
                    "distillation.alpha=0 and loss.type=%s: no loss term reads the teacher's "
                    "class scores", loss_type)
    if extended or needs_teacher(loss_type, alpha) or probe_teacher:
        if not cfg.dataset.soft_labels_path:
            raise ConfigError(
                f"loss.type={loss_type} learns from BirdNET's soft labels: set "
                "dataset.soft_labels_path (run extract_soft_labels.py first), or use "
                "--config-name=pure_focal_config for a loss without a teacher."
            )
        if uses_embedding:
            check_embedding_dim(cfg)
        store = attach_soft_labels(cfg, data, embeddings=uses_embedding or probe_teacher)
    probe = attach_probe_teacher(cfg, data, store) if probe_teacher and not pretrain else None
    # Without its probe (warned above) the windows without a label get no class targets.
    unlabelled_alpha = 0.0 if probe_teacher and probe is None else alpha
    weights = class_weights_for(cfg, data).weights
    base = build_loss(cfg.loss, class_weights=weights, n_classes=len(data.class_names),
                      alpha=alpha, temperature=temperature)
    if not extended:
        return base
    teacher_windows = None
    if all_windows or data.unlabelled:
        teacher_windows = add_teacher_windows(cfg, data, store,
                                              uses_embedding or probe_teacher,
                                              all_windows, probe)
    mean = scale = None
    if uses_embedding and bool(cfg.distillation.get("embedding_standardize", False)):
        # Statistics of the training side only (its recordings and the unlabelled pool).
        keys = ({item.key for item in teacher_windows.items} if teacher_windows is not None
                else set())
        keys |= {e.path for e in data.datasets["train"].examples if store.has(e.path)}
        mean, scale = embedding_statistics([store.record(k)["embedding"] for k in sorted(keys)
                                            if store.has(k)])
        log.info("Embedding target standardised over %d files' windows", len(keys))
    return TeacherTargetsLoss(
        None if pretrain else base, alpha=unlabelled_alpha, temperature=temperature,
        soft_target=str(cfg.loss.get("soft_target", "softmax")),
        embedding_weight=embedding_weight,
        embedding_loss=str(cfg.distillation.embedding_loss), pretrain=pretrain,
        embedding_mean=mean, embedding_scale=scale,
        logit_weight=logit_weight,
        logit_temperature=float(cfg.distillation.get("birdnet_logit_temperature", 2.0)),
        output_layer=birdnet_output_layer() if logit_weight > 0 else None,
        contrastive_weight=contrastive_weight,
        contrastive_temperature=float(
            cfg.distillation.get("embedding_contrastive_temperature", 0.1)),
    )


def birdnet_output_layer() -> tuple[torch.Tensor, torch.Tensor]:
    """BirdNET's output layer (weights (6522, 1024), bias (6522,)) read from its model file."""
    weight, bias = BirdNetTeacher(num_threads=1).output_layer()
    return torch.from_numpy(weight), torch.from_numpy(bias)

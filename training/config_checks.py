"""Start-up validation of a training config: one message, before any audio is touched.

Every value a run depends on is checked once here (types, ranges, species folders, BirdNET
names for distillation, a resumed run's architecture), so a typo costs a second instead of
an hour of audio preparation followed by a traceback. ``run_training`` calls
:func:`check_training_config` first; the problems found are reported together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.errors import ConfigError

# "last": every epoch counts as the best, so the final weights are kept and nothing stops
# early (for runs without a validation split, such as evaluation.val_fraction=0).
MONITORS = ("val_macro_f1", "val_accuracy", "val_loss", "train_loss", "train_accuracy",
            "val_embedding_cosine", "last")
SCHEDULERS = ("cosine", "plateau", "none")
OPTIMIZERS = ("adam", "adamw")


class _Checker:
    """Collects every problem so the user fixes them in one go."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.problems: list[str] = []

    def value(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key, default=None)

    def number(self, key: str, *, whole: bool = False, low: float | None = None,
               high: float | None = None, low_open: bool = False, optional: bool = False,
               hint: str = "") -> float | None:
        raw = self.value(key)
        if raw is None:
            if not optional:
                self.problems.append(f"{key} is missing; set it{hint}")
            return None
        kind = "a whole number" if whole else "a number"
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            self.problems.append(f"{key}={raw!r} is not {kind}{hint}")
            return None
        try:
            number = float(raw)
        except ValueError:
            self.problems.append(f"{key}={raw!r} is not {kind}{hint}")
            return None
        if not math.isfinite(number) or (whole and number != int(number)):
            self.problems.append(f"{key}={raw!r} is not {kind}{hint}")
            return None
        too_low = low is not None and (number <= low if low_open else number < low)
        too_high = high is not None and number > high
        if too_low or too_high:
            lower = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            upper = "" if high is None else f"<= {high:g}"
            bounds = " and ".join(filter(None, (lower, upper)))
            self.problems.append(f"{key}={raw!r} is out of range (must be {bounds}){hint}")
            return None
        return number

    def choice(self, key: str, choices: tuple[str, ...], normalise: Callable[[str], str] = str
               ) -> None:
        raw = self.value(key)
        if normalise(str(raw)) not in choices:
            self.problems.append(f"{key}={raw!r} is not one of {', '.join(choices)}")


def _check_numbers(check: _Checker) -> None:
    check.number("seed", whole=True)
    check.number("training.epochs", whole=True, low=1,
                 hint="; a run must train at least one epoch")
    check.number("training.batch_size", whole=True, low=1)
    check.number("training.patience", whole=True, low=0)
    check.number("training.min_delta", low=0)
    check.number("training.min_lr", low=0)
    check.number("training.grad_clip", low=0, optional=True)
    check.number("training.ema_decay", low=0, high=0.9999, optional=True,
                 hint="; 0 turns the weight average off")
    check.number("training.checkpoint_every", whole=True, low=0, optional=True)
    check.number("training.num_threads", whole=True, low=1, optional=True)
    check.choice("training.monitor", MONITORS)
    check.choice("training.scheduler", SCHEDULERS, str.lower)
    if (str(check.value("training.monitor")) == "last"
            and str(check.value("training.scheduler")).lower() == "plateau"):
        check.problems.append("training.scheduler=plateau lowers the rate when the monitored "
                              "metric stalls; training.monitor=last has none (use cosine)")
    check.number("optimizer.lr", low=0, low_open=True)
    check.number("optimizer.weight_decay", low=0)
    check.choice("optimizer.type", OPTIMIZERS, str.lower)
    check.number("model.dropout", low=0, high=0.99, optional=True)
    check.number("model.frontend_lr", low=0, low_open=True, optional=True)
    check.number("model.n_classes", whole=True, low=2, optional=True)
    check.number("dataset.target_sr", whole=True, low=1000, high=384000)
    check.number("dataset.clip_duration", low=0.1, high=600)
    check.number("dataset.num_workers", whole=True, low=0)
    check.number("dataset.call_threshold_k", low=0)
    check.number("dataset.energy_threshold_factor", low=0, low_open=True)
    check.number("dataset.quiet_segments_per_file", whole=True, low=0)
    check.number("dataset.num_no_bird_samples", whole=True, low=0, optional=True)
    check.number("dataset.esc50_no_bird_ratio", low=0, high=1)
    check.number("debug.files_limit", whole=True, low=0, optional=True)
    augmentation = "dataset.augmentation"
    for key, high in (("time_shift_s", None), ("gain_db", None), ("noise_level", None),
                      ("background_prob", 1), ("mixup_alpha", None),
                      ("time_mask_param", None), ("freq_mask_param", None),
                      ("speed_perturb", 1)):
        check.number(f"{augmentation}.{key}", low=0, high=high, optional=True)
    check.number("distillation.labelled_share", low=0, high=1, low_open=True, optional=True)
    check.number("distillation.birdnet_logit_weight", low=0, optional=True)
    check.number("distillation.birdnet_logit_temperature", low=0, low_open=True, optional=True)
    check.number("distillation.embedding_contrastive_weight", low=0, optional=True)
    check.number("distillation.embedding_contrastive_temperature", low=0, low_open=True,
                 optional=True)
    device = str(check.value("training.device"))
    if device not in ("auto", "cpu", "cuda", "mps") and not device.startswith("cuda:"):
        check.problems.append(f"training.device={device!r} is not auto, cpu, cuda or cuda:N")


def _check_split_ratios(check: _Checker) -> None:
    ratios = check.value("dataset.split_ratios")
    message = ("dataset.split_ratios={} must be three positive numbers (train, validation, "
               "test) that add up to 1, e.g. [0.7,0.15,0.15]; the validation share may be 0 "
               "with training.monitor=last")
    if not isinstance(ratios, ListConfig | list) or len(ratios) != 3:
        check.problems.append(message.format(ratios))
        return
    try:
        values = [float(r) for r in ratios]
    except (TypeError, ValueError):
        check.problems.append(message.format(list(ratios)))
        return
    # Validation picks the best epoch and test scores it: neither may be empty, except that
    # a run keeping its last epoch (few recordings: every one trains) needs no validation.
    train, val, test = values
    keeps_last = str(check.value("training.monitor")) == "last"
    shares_ok = train > 0 and test > 0 and (val > 0 or (val == 0 and keeps_last))
    if (not all(math.isfinite(v) for v in values) or not shares_ok
            or abs(sum(values) - 1) > 1e-6):
        check.problems.append(message.format(values))


def _check_model_name(check: _Checker) -> None:
    from models import list_models

    name = str(check.value("model.name"))
    if name not in list_models():
        check.problems.append(f"model.name={name!r} is not one of {', '.join(list_models())}")


def _check_species(check: _Checker) -> list[str]:
    """The species list itself, and that each species has a readable folder with audio."""
    from datasets.dataset_factory import class_names_from_config
    from datasets.split_manifest import DatasetError

    try:
        species = class_names_from_config(check.cfg.dataset)[:-1]
    except DatasetError as error:
        check.problems.append(str(error))
        return []
    if check.value("dataset.split_manifest"):
        return species  # the manifest names the files; its labels are checked when read
    bird_dir = Path(str(check.value("dataset.bird_data_dir")))
    if not bird_dir.is_dir():
        check.problems.append(
            f"Bird dataset folder '{bird_dir}' does not exist. Put recordings in "
            f"'{bird_dir}/<Genus_species>/' or set dataset.bird_data_dir=<folder> "
            "(run 'make demo' to generate a synthetic example corpus)."
        )
        return species
    missing = [s for s in species if not (bird_dir / s).is_dir()]
    if missing:
        available = sorted(p.name for p in bird_dir.iterdir()
                           if p.is_dir() and not p.name.startswith("."))
        check.problems.append(
            f"dataset.allowed_bird_classes names {missing}, which are not folders in "
            f"'{bird_dir}' (available: {available}); a class without recordings cannot be "
            "learnt. Fix the names or add the folders."
        )
    unreadable = [s for s in species if (bird_dir / s).is_dir()
                  and not os.access(bird_dir / s, os.R_OK | os.X_OK)]
    if unreadable:
        check.problems.append(
            f"species folders {unreadable} in '{bird_dir}' cannot be read (permission "
            "denied); fix their permissions (chmod) or remove them from "
            "dataset.allowed_bird_classes"
        )
    return species


def _check_distillation(check: _Checker, species: list[str]) -> None:
    """With a teacher: alpha and temperature, soft labels set, species known to BirdNET."""
    if "distillation" not in check.cfg or "loss" not in check.cfg:
        return
    from distillation.losses import needs_teacher
    from distillation.training_setup import resolved_alpha_temperature

    try:
        alpha, _ = resolved_alpha_temperature(check.cfg)
        teacher = needs_teacher(str(check.cfg.loss.type), alpha)
    except (ValueError, KeyError) as error:
        check.problems.append(str(error))
        return
    if not teacher:
        return
    soft_labels = check.value("dataset.soft_labels_path")
    if soft_labels and not Path(str(soft_labels)).is_dir():
        check.problems.append(
            f"dataset.soft_labels_path={soft_labels} does not exist; run "
            "extract_soft_labels.py for these species first"
        )
    from birdnet.species_names import UnknownSpeciesError
    from birdnet.teacher import species_names

    names = species_names()
    for name in species:
        try:
            names.index(name)
        except UnknownSpeciesError as error:
            check.problems.append(str(error))


def check_training_config(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem of ``cfg``; do nothing when it is sound."""
    check = _Checker(cfg)
    _check_numbers(check)
    _check_split_ratios(check)
    _check_model_name(check)
    species = _check_species(check)
    if not check.problems:
        _check_distillation(check, species)
    if check.problems:
        if len(check.problems) == 1:
            raise ConfigError(f"Invalid configuration: {check.problems[0]}")
        listed = "\n  - ".join(check.problems)
        raise ConfigError(f"Invalid configuration ({len(check.problems)} problems):\n  - {listed}")


def check_resume_state(saved: dict, model_name: str, model_kwargs: dict) -> None:
    """A resumed run must rebuild the architecture it saved (weights would not fit otherwise)."""
    saved_name = saved.get("model_name")
    if saved_name is not None and saved_name != model_name:
        raise ConfigError(
            f"training.resume: the interrupted run trained model.name={saved_name}, this "
            f"config asks for {model_name}; resume with model={saved_name} (or start a new "
            "run with training.resume=false)"
        )
    saved_kwargs = saved.get("model_kwargs")
    if saved_kwargs is not None and saved_kwargs != model_kwargs:
        changed = sorted(k for k in set(saved_kwargs) | set(model_kwargs)
                         if saved_kwargs.get(k) != model_kwargs.get(k))
        raise ConfigError(
            f"training.resume: the interrupted run's model settings differ in {changed}; "
            "resume with the settings it was started with (or training.resume=false)"
        )

"""The checkpoint: one ``.pt`` file that is enough on its own to rebuild and use a model.

On disk it is a dict of plain Python types and tensors, so it loads with
``torch.load(weights_only=True)`` (no pickled code is ever executed); in memory it is a typed
:class:`Checkpoint`: architecture name and arguments, weights, class names (``no_birds``
last), audio settings, split manifest, metrics and the resolved config. Checkpoints written
before the typed form load unchanged: the file format is the same (format version 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from common.file_io import write_atomic
from models import MODEL_REGISTRY, build_model, list_models

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
REQUIRED_CHECKPOINT_KEYS: tuple[str, ...] = (
    "format_version",
    "model_name",
    "model_kwargs",
    "state_dict",
    "class_names",
    "audio",
)
# Top-level keys with a field of their own; any other key is kept in Checkpoint.extra.
_FIELD_KEYS = frozenset(REQUIRED_CHECKPOINT_KEYS) | {"metrics", "config", "split_manifest",
                                                     "epoch"}


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do (shown to users)."""


@dataclass(frozen=True)
class AudioSettings:
    """What the model hears: mono audio at ``sample_rate``, windows of ``clip_duration`` s."""

    sample_rate: int
    clip_duration: float

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_duration))

    @classmethod
    def from_mapping(cls, audio: Mapping[str, Any]) -> AudioSettings:
        return cls(int(audio["sample_rate"]), float(audio["clip_duration"]))

    def as_dict(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "clip_duration": self.clip_duration}


@dataclass
class Checkpoint:
    model_name: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    class_names: list[str]
    audio: AudioSettings
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # Rows (path, label, group, split, source) of the run's split manifest.
    split_manifest: list[dict[str, Any]] = field(default_factory=list)
    epoch: int | None = None
    # Other top-level keys (e.g. output_activation), kept as they are.
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = CHECKPOINT_FORMAT_VERSION

    @property
    def dataset_config(self) -> dict[str, Any]:
        """The ``dataset`` section of the training config (empty when none was stored)."""
        return dict((self.config or {}).get("dataset") or {})

    def build_model(self, path: str | Path = "checkpoint") -> nn.Module:
        """The model with these weights, in eval mode; CheckpointError when the code cannot
        rebuild it."""
        if self.model_name not in MODEL_REGISTRY:
            raise CheckpointError(
                f"{path} holds model {self.model_name!r}, which this code does not know "
                f"(known: {', '.join(list_models())}). Update the code, or retrain with a "
                "known model."
            )
        try:
            model = build_model(self.model_name, **self.model_kwargs)
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"cannot rebuild model {self.model_name!r} from {path} with its stored "
                f"settings {self.model_kwargs}: {err}. The model code has changed since it "
                "was saved; retrain, or use the code version that wrote it."
            ) from err
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"the weights in {path} do not fit model {self.model_name!r} as built now "
                f"({err}). The model code has changed since it was saved; retrain, or use the "
                "code version that wrote it."
            ) from err
        return model.eval()

    def to_payload(self) -> dict[str, Any]:
        """The dict written to disk (plain types and tensors only)."""
        payload: dict[str, Any] = {
            "format_version": self.format_version,
            "model_name": self.model_name,
            "model_kwargs": _plain(self.model_kwargs, "model_kwargs"),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict.items()},
            "class_names": [str(c) for c in self.class_names],
            "audio": self.audio.as_dict(),
            "metrics": _plain(self.metrics, "metrics"),
            "config": _plain(self.config, "config"),
        }
        if self.split_manifest:
            payload["split_manifest"] = _plain(self.split_manifest, "split_manifest")
        if self.epoch is not None:
            payload["epoch"] = int(self.epoch)
        for key, value in self.extra.items():
            if key in _FIELD_KEYS:
                raise ValueError(f"extra key {key!r} would overwrite a checkpoint field")
            payload[key] = _plain(value, key)
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], path: str | Path) -> Checkpoint:
        """Check and type a loaded dict; CheckpointError says what is wrong with the file."""
        if not isinstance(payload, Mapping):
            raise CheckpointError(
                f"{path} holds a {type(payload).__name__}, not a checkpoint dict; point to the "
                ".pt file saved by training."
            )
        missing = [key for key in REQUIRED_CHECKPOINT_KEYS if key not in payload]
        if missing:
            raise CheckpointError(
                f"{path} is not a complete checkpoint (missing {', '.join(missing)}); it may be "
                "a bare state dict or from another tool. Retrain to create a full checkpoint."
            )
        version = payload["format_version"]
        if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint format {version!r}, newer than this code understands "
                f"({CHECKPOINT_FORMAT_VERSION}); update the code to the version that wrote it."
            )
        try:
            audio = AudioSettings.from_mapping(payload["audio"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"{path} has unusable audio settings {payload['audio']!r} ({err}); retrain to "
                "create a new checkpoint."
            ) from err
        epoch = payload.get("epoch")
        try:
            return cls(
                model_name=str(payload["model_name"]),
                model_kwargs=dict(payload["model_kwargs"]),
                state_dict=dict(payload["state_dict"]),
                class_names=[str(c) for c in payload["class_names"]],
                audio=audio,
                metrics=dict(payload.get("metrics") or {}),
                config=dict(payload.get("config") or {}),
                split_manifest=list(payload.get("split_manifest") or []),
                epoch=None if epoch is None else int(epoch),
                extra={k: v for k, v in payload.items() if k not in _FIELD_KEYS},
                format_version=version,
            )
        except (TypeError, ValueError) as err:  # a field of the wrong type: not our file
            raise CheckpointError(
                f"{path} has a checkpoint field of the wrong type ({err}); it was not written "
                "by this project's training. Point to the .pt file saved by training."
            ) from err


def _plain(value: Any, where: str) -> Any:
    """Recursively turn ``value`` into types ``torch.load(weights_only=True)`` accepts.

    numpy scalars/arrays become Python numbers/lists, tuples and other sequences become lists,
    mappings (incl. OmegaConf configs) become dicts, paths become strings. Anything else is a
    caller bug: fail now, with the key, instead of writing a checkpoint that cannot be loaded.
    """
    # numpy first: np.float64 and np.str_ subclass float/str but still pickle as numpy types.
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"cannot store {type(value).__name__} at {where!r} in a checkpoint")


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    payload = checkpoint.to_payload()
    write_atomic(path, lambda handle: torch.save(payload, handle))
    log.info("saved checkpoint %s (%s, %d classes)", path, checkpoint.model_name,
             len(checkpoint.class_names))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: dict,
    class_names: list[str],
    audio: Mapping[str, Any] | AudioSettings,
    metrics: dict | None = None,
    config: dict | None = None,
    split_manifest: list[dict] | None = None,
    epoch: int | None = None,
    extra: dict | None = None,
) -> Checkpoint:
    """Write a self-contained checkpoint of ``model``; return it.

    ``model_kwargs`` must rebuild ``model`` through ``build_model(model_name, **model_kwargs)``;
    ``n_classes`` defaults to ``len(class_names)`` and ``sample_rate`` / ``clip_duration`` to
    the ``audio`` settings.
    """
    if model_name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {model_name!r}; valid names: {', '.join(list_models())}")
    settings = audio if isinstance(audio, AudioSettings) else AudioSettings.from_mapping(audio)
    kwargs = dict(model_kwargs)
    kwargs.setdefault("n_classes", len(class_names))
    kwargs.setdefault("sample_rate", settings.sample_rate)
    kwargs.setdefault("clip_duration", settings.clip_duration)
    if kwargs["n_classes"] != len(class_names):
        raise ValueError(
            f"model_kwargs n_classes={kwargs['n_classes']} but {len(class_names)} class names"
        )
    checkpoint = Checkpoint(
        model_name=model_name, model_kwargs=kwargs, state_dict=model.state_dict(),
        class_names=list(class_names), audio=settings, metrics=dict(metrics or {}),
        config=dict(config or {}), split_manifest=list(split_manifest or []), epoch=epoch,
        extra=dict(extra or {}),
    )
    write_checkpoint(path, checkpoint)
    return checkpoint


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """The checkpoint at ``path``, checked and typed (the model is not built)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Check the path, or train a model first to create it."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling, zip, EOF, OS errors all mean "unusable file"
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is not a model checkpoint written by this "
            f"project, or it is truncated/corrupted ({type(err).__name__}: {err}). "
            "Point to the .pt file saved by training, or retrain to create a new one."
        ) from err
    return Checkpoint.from_payload(payload, path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model from a checkpoint: ``(model in eval mode, checkpoint)``."""
    checkpoint = read_checkpoint(path, map_location)
    model = checkpoint.build_model(path).to(map_location)
    log.info("loaded checkpoint %s (%s, %d classes)", path, checkpoint.model_name,
             len(checkpoint.class_names))
    return model, checkpoint


def check_class_names(checkpoint_classes: list[str], expected: list[str]) -> None:
    """Raise ``CheckpointError`` unless the checkpoint predicts exactly ``expected``, in order.

    Order matters: logit ``i`` means ``checkpoint_classes[i]``, so a reordered list would
    silently swap species.
    """
    checkpoint_classes, expected = list(checkpoint_classes), list(expected)
    if checkpoint_classes == expected:
        return
    missing = [c for c in expected if c not in checkpoint_classes]
    extra = [c for c in checkpoint_classes if c not in expected]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {missing}")
    if extra:
        problems.append(f"extra in the checkpoint: {extra}")
    if not missing and not extra:
        moved = [c for i, c in enumerate(expected) if checkpoint_classes[i] != c]
        problems.append(f"same classes in a different order (reordered: {moved})")
    raise CheckpointError(
        "the checkpoint's classes do not match the expected classes; "
        + "; ".join(problems)
        + f". Checkpoint classes: {checkpoint_classes}. Expected classes: {expected}. "
        "Retrain the model for these classes, or fix dataset.allowed_bird_classes to match "
        "the checkpoint."
    )

"""What an exported model needs besides its weights: ``model.json`` and ONNX metadata.

The sidecar is the contract between export and inference: class order (``no_birds`` last),
audio settings, default hop and thresholds, and where the model came from. The same
description is embedded in every ONNX file (metadata key ``bird_edge_model``), so a single
``.onnx`` copied to a device on its own still knows its classes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.classes import NO_BIRDS
from edge.errors import EdgeError

SIDECAR_FILENAME = "model.json"
ONNX_METADATA_KEY = "bird_edge_model"
FP32_FILENAME = "model_fp32.onnx"
INT8_FILENAME = "model_int8.onnx"
SIDECAR_VERSION = 1


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelInfo:
    """Everything inference needs to know about an exported model (the sidecar's content)."""

    class_names: list[str]
    sample_rate: int
    clip_duration: float
    hop_duration: float
    thresholds: dict[str, float]
    # How logits become confidences: "softmax" for models trained with cross-entropy over
    # species + no_birds (one label per window); "sigmoid" for multi-label heads.
    output_activation: str = "softmax"
    input_name: str = "audio"
    output_name: str = "logits"
    low_freq_hz: float = 0.0
    high_freq_hz: float | None = None
    common_names: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    # How ``thresholds`` were chosen by ``python -m export.calibrate`` (empty: one fixed value).
    threshold_calibration: dict[str, Any] = field(default_factory=dict)
    version: int = SIDECAR_VERSION

    def __post_init__(self) -> None:
        if not self.class_names or self.class_names[-1] != NO_BIRDS:
            raise EdgeError(
                f"class list {self.class_names} must end with '{NO_BIRDS}'; this model was not "
                "trained by this project"
            )
        if self.output_activation not in ("softmax", "sigmoid"):
            raise EdgeError(f"unknown output_activation {self.output_activation!r}")

    @property
    def species(self) -> list[str]:
        return self.class_names[:-1]

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_duration))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ModelInfo:
        required = ("class_names", "sample_rate", "clip_duration", "hop_duration", "thresholds")
        missing = [key for key in required if key not in data]
        if missing:
            raise EdgeError(f"{where} lacks {', '.join(missing)}; re-export the model")
        if int(data.get("version", 1)) > SIDECAR_VERSION:
            raise EdgeError(f"{where} was written by a newer version of this code; update it")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def model_file(model_dir: str | Path, info: ModelInfo, kind: str) -> Path:
    """The ONNX file ``info.files[kind]`` names; always a bare name inside ``model_dir``."""
    from common.safe_paths import UnsafePathError, plain_file_name

    where = f"{Path(model_dir) / SIDECAR_FILENAME} (files.{kind})"
    try:
        return Path(model_dir) / plain_file_name(str(info.files[kind]), where)
    except UnsafePathError as error:
        raise EdgeError(str(error)) from error


def write_sidecar(info: ModelInfo, out_dir: str | Path) -> Path:
    from common.file_io import write_atomic

    path = Path(out_dir) / SIDECAR_FILENAME
    write_atomic(path, lambda handle: handle.write(info.to_json().encode("utf-8")))
    return path


def read_sidecar(model_dir: str | Path) -> ModelInfo:
    path = Path(model_dir) / SIDECAR_FILENAME
    if not path.is_file():
        raise EdgeError(
            f"{model_dir} has no {SIDECAR_FILENAME}; point to a folder written by "
            "export_model.py, to one of its .onnx files, or to a .pt checkpoint"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise EdgeError(f"{path} is not valid JSON ({error}); re-export the model") from error
    return ModelInfo.from_dict(data, str(path))


def finalize_onnx(onnx_path: str | Path, info: ModelInfo) -> None:
    """Store the model description inside the ONNX file and drop the exporter's per-node
    debug metadata (module scopes, stack traces: ~110 KB of a ~400 KB model). Rewritten in
    place; quantisation must run before this, as it reads the scopes."""
    import onnx

    model = onnx.load(str(onnx_path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    kept = [p for p in model.metadata_props if p.key != ONNX_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, info.to_json()
    onnx.save(model, str(onnx_path))


def info_from_onnx_metadata(metadata: dict[str, str], where: str) -> ModelInfo | None:
    """The embedded description from an onnxruntime session's ``custom_metadata_map``."""
    text = metadata.get(ONNX_METADATA_KEY)
    if text is None:
        return None
    try:
        return ModelInfo.from_dict(json.loads(text), where)
    except ValueError as error:
        raise EdgeError(f"{where} holds unreadable model metadata ({error})") from error

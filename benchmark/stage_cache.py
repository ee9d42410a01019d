"""Reuse a stage's output when its inputs have not changed (a key file beside the output)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from common.file_io import save_table_atomic, write_atomic


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _key_path(csv_path: Path) -> Path:
    return csv_path.with_name(f".{csv_path.stem}.key")


def reuse(csv_path: str | Path, key: str) -> pd.DataFrame | None:
    csv_path = Path(csv_path)
    key_path = _key_path(csv_path)
    if csv_path.is_file() and key_path.is_file() and key_path.read_text().strip() == key:
        return pd.read_csv(csv_path, keep_default_na=False)
    return None


def save(table: pd.DataFrame, csv_path: str | Path, key: str) -> None:
    """Table first, key last: a killed run never leaves a key for a missing table."""
    csv_path = Path(csv_path)
    save_table_atomic(table, csv_path)
    write_atomic(_key_path(csv_path), lambda handle: handle.write(key.encode()))

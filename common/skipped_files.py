"""A bad input file is skipped, counted and listed with its reason: the record of one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from common.file_io import write_csv_atomic

SKIPPED_COLUMNS: list[str] = ["path", "reason", "stage"]


@dataclass
class SkippedFile:
    path: str
    reason: str
    stage: str


def write_skipped_files(skipped: Sequence[SkippedFile], path: str | Path) -> Path:
    """``skipped_files.csv`` (path, reason, stage), written atomically."""
    return write_csv_atomic(path, SKIPPED_COLUMNS, (asdict(item) for item in skipped))

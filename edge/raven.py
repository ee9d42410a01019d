"""Raven selection tables in BirdNET-Analyzer's column layout.

Per file (``<name>.selection.table.txt``) and combined over all files, tab-separated, with
BirdNET-Analyzer's twelve columns in its order. As in BirdNET-Analyzer, ``Begin Path`` is
the audio file and ``File Offset (s)`` the start within it; in the combined table
``Begin Time (s)``/``End Time (s)`` run on across files (each file starts where the previous
one ended), which is how Raven shows a list of files as one long recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.file_io import write_atomic
from edge.detections import Detection

RAVEN_COLUMNS: tuple[str, ...] = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Common Name",
    "Species Code",
    "Confidence",
    "Begin Path",
    "File Offset (s)",
)
VIEW = "Spectrogram 1"
CHANNEL = 1
TABLE_SUFFIX = ".selection.table.txt"
COMBINED_TABLE_NAME = "combined" + TABLE_SUFFIX


@dataclass(frozen=True)
class FileDetections:
    """One analysed file: where it is, how long it is, what was found, its band."""

    begin_path: str
    duration_s: float
    detections: Sequence[Detection]
    low_freq_hz: float
    high_freq_hz: float


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _rows(item: FileDetections, common_names: dict[str, str], first: int,
          offset_s: float) -> list[list[str]]:
    rows = []
    for i, det in enumerate(item.detections):
        rows.append([
            str(first + i),
            VIEW,
            str(CHANNEL),
            _seconds(det.start + offset_s),
            _seconds(det.end + offset_s),
            f"{item.low_freq_hz:.1f}",
            f"{item.high_freq_hz:.1f}",
            common_names.get(det.species, det.species.replace("_", " ")),
            det.species,
            f"{det.confidence:.4f}",
            item.begin_path,
            _seconds(det.start),
        ])
    return rows


def format_table(rows: list[list[str]]) -> str:
    lines = ["\t".join(RAVEN_COLUMNS)] + ["\t".join(row) for row in rows]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> Path:
    # A file name that is not valid UTF-8 is written as its original bytes.
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8", "surrogateescape")))


def write_selection_table(path: str | Path, item: FileDetections,
                          common_names: dict[str, str] | None = None) -> Path:
    """One file's table (header only when nothing was detected)."""
    return _write(Path(path), format_table(_rows(item, common_names or {}, 1, 0.0)))


def write_combined_table(path: str | Path, items: Sequence[FileDetections],
                         common_names: dict[str, str] | None = None) -> Path:
    """All files in order; selections numbered across files, times offset by the total
    duration of the files before."""
    rows: list[list[str]] = []
    offset = 0.0
    for item in items:
        rows += _rows(item, common_names or {}, len(rows) + 1, offset)
        offset += item.duration_s
    return _write(Path(path), format_table(rows))

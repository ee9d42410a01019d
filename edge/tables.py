"""The detection tables BirdNET-Analyzer users load, besides ``detections.csv``.

``--formats`` of ``predict.py`` picks them (comma-separated):

- ``raven``: Raven selection tables, per file and combined (``edge/raven.py``);
- ``audacity``: an Audacity label track per file, ``<name>.labels.txt``: one line per
  detection, ``start<TAB>end<TAB>Genus_species, confidence`` (File > Import > Labels);
- ``kaleidoscope``: ``kaleidoscope.csv`` for all files, in Kaleidoscope's layout (``INDIR``,
  ``FOLDER``, ``IN FILE``, ``OFFSET``, ``DURATION``) followed by ``scientific_name``,
  ``common_name`` and ``confidence``, as BirdNET-Analyzer writes it.

``detections.csv`` is always written; ``csv`` is accepted in the list for symmetry.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from common.file_io import write_atomic
from edge.errors import EdgeError
from edge.raven import TABLE_SUFFIX, FileDetections, write_selection_table

FORMATS: tuple[str, ...] = ("csv", "raven", "audacity", "kaleidoscope")
DEFAULT_FORMATS: tuple[str, ...] = ("csv", "raven")
AUDACITY_SUFFIX = ".labels.txt"
KALEIDOSCOPE_NAME = "kaleidoscope.csv"
KALEIDOSCOPE_COLUMNS: tuple[str, ...] = (
    "INDIR", "FOLDER", "IN FILE", "OFFSET", "DURATION", "scientific_name", "common_name",
    "confidence",
)


def parse_formats(text: str | None) -> tuple[str, ...]:
    """``raven,audacity`` -> ("csv", "raven", "audacity"); csv is always part of a run."""
    if not text:
        return DEFAULT_FORMATS
    wanted = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(FORMATS))
    if unknown:
        raise EdgeError(f"--formats: unknown {', '.join(unknown)}; choose from "
                        f"{', '.join(FORMATS)}")
    return tuple(name for name in FORMATS if name == "csv" or name in wanted)


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def audacity_name(raven_name: str | Path) -> Path:
    """``a/b.selection.table.txt`` -> ``a/b.labels.txt`` (the same stem as the Raven table)."""
    raven_name = Path(raven_name)
    stem = raven_name.name[: -len(TABLE_SUFFIX)] if raven_name.name.endswith(TABLE_SUFFIX) \
        else raven_name.stem
    return raven_name.with_name(stem + AUDACITY_SUFFIX)


def format_audacity(item: FileDetections) -> str:
    return "".join(f"{d.start:.3f}\t{d.end:.3f}\t{d.species}, {d.confidence:.4f}\n"
                   for d in item.detections)


def parse_audacity(text: str) -> list[tuple[float, float, str, float]]:
    """(start, end, species, confidence) of each label line written by ``format_audacity``."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        start, end, label = line.split("\t", 2)
        species, _, confidence = label.rpartition(", ")
        rows.append((float(start), float(end), species, float(confidence)))
    return rows


def kaleidoscope_rows(root: str | Path, items: Sequence[FileDetections],
                      common_names: dict[str, str]) -> list[list[str]]:
    """One row per detection; ``FOLDER`` is the file's folder relative to ``INDIR`` (the
    input folder), as Kaleidoscope lists a recursive scan."""
    rows = []
    for item in items:
        for det in item.detections:
            relative = PurePosixPath(det.file)
            folder = "" if str(relative.parent) == "." else str(relative.parent)
            rows.append([
                str(root), folder, relative.name, f"{det.start:.3f}",
                f"{det.end - det.start:.3f}", det.species.replace("_", " "),
                common_names.get(det.species, ""), f"{det.confidence:.4f}",
            ])
    return rows


def write_file_tables(out_dir: Path, raven_name: Path, item: FileDetections,
                      common_names: dict[str, str], formats: Sequence[str]) -> None:
    """The per-file tables of ``formats`` (Raven, Audacity) for one analysed file."""
    if "raven" in formats:
        write_selection_table(out_dir / raven_name, item, common_names)
    if "audacity" in formats:
        _write_text(out_dir / audacity_name(raven_name), format_audacity(item))


def write_kaleidoscope(path: Path, root: str | Path, items: Sequence[FileDetections],
                       common_names: dict[str, str]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(KALEIDOSCOPE_COLUMNS)
    writer.writerows(kaleidoscope_rows(root, items, common_names))
    return _write_text(path, buffer.getvalue())

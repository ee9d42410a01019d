"""Annotated soundscapes -> a table of labelled segments (file, start, end, species).

Two inputs:

- a CSV with ``file,start,end,species`` (``species`` a space-separated list of
  ``Genus_species``, empty where no bird calls; extra columns are ignored), the layout of
  ``soundscapes/labels.csv``;
- a folder of Raven selection tables, one per recording, with BirdNET-Analyzer's columns
  (``Begin Time (s)``, ``End Time (s)``, ``Species Code`` or ``Common Name``, optionally
  ``Begin Path`` and ``File Offset (s)``). Selections are events; each recording is cut into
  ``segment_s`` segments labelled with every species whose selections overlap them.

Audio paths named in annotations are resolved inside the audio folder (by default the folder
of the annotations): a path that would leave it is refused, a recording that is not there is
skipped and reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from common.skipped_files import SkippedFile
from datasets.audio_utils import AudioLoadError, audio_duration, is_audio_file
from datasets.split_manifest import DatasetError

log = logging.getLogger(__name__)

SEGMENT_COLUMNS = ("file", "start", "end", "species")
RAVEN_SUFFIXES = (".BirdNET.selection.table.txt", ".selection.table.txt", ".txt")


def split_species(text: object) -> tuple[str, ...]:
    """``'A_b C_d'`` -> ("A_b", "C_d"); empty, NaN or None -> ()."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ()
    return tuple(dict.fromkeys(str(text).split()))


def resolve_inside(audio_dir: Path, name: str) -> Path:
    """``audio_dir / name`` when it stays inside ``audio_dir``; DatasetError otherwise."""
    relative = PurePosixPath(str(name).replace("\\", "/"))
    root = audio_dir.resolve()
    path = (root / relative).resolve()
    if relative.is_absolute() or not path.is_relative_to(root):
        raise DatasetError(f"annotation names {name!r}, which is outside the audio folder "
                           f"{root}; name recordings relative to that folder")
    return path


def read_segments_csv(path: Path, audio_dir: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, keep_default_na=False, dtype={"species": str})
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read annotations {path}: {error}") from error
    missing = [c for c in SEGMENT_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path} lacks the column(s) {', '.join(missing)}; expected "
                           "file,start,end,species (species space-separated, empty = no bird)")
    try:
        starts, ends = table["start"].astype(float), table["end"].astype(float)
    except ValueError as error:
        raise DatasetError(f"{path}: start and end must be seconds ({error})") from error
    if (ends <= starts).any():
        row = int((ends <= starts).to_numpy().nonzero()[0][0])
        raise DatasetError(f"{path}: row {row + 2} ends before it starts")
    return pd.DataFrame({
        "file": [str(resolve_inside(audio_dir, f)) for f in table["file"]],
        "start": starts, "end": ends,
        "species": [split_species(s) for s in table["species"]],
    })


def _species_of_selection(row: pd.Series, common_to_species: dict[str, str]) -> str | None:
    for column in ("Species", "Scientific Name", "Species Code"):
        value = str(row.get(column, "") or "").strip()
        parts = value.replace("_", " ").split()
        if len(parts) == 2 and parts[0][:1].isupper() and parts[1].islower():
            return "_".join(parts)
    common = str(row.get("Common Name", "") or "").strip()
    if common:
        return common_to_species.get(common.lower(), common.replace(" ", "_"))
    return None


def _base_name(named: str) -> str:
    # Tables written on another machine hold its absolute paths: only the name counts.
    return PureWindowsPath(named).name if "\\" in named else PurePosixPath(named).name


def _recordings_of_table(table_path: Path, selections: pd.DataFrame,
                         audio_dir: Path) -> list[tuple[Path, pd.DataFrame]]:
    """(recording, its selections): by ``Begin Path`` (a combined table names several),
    else the recording named like the table."""
    if "Begin Path" in selections.columns and len(selections):
        names = selections["Begin Path"].astype(str).map(_base_name)
        return [(resolve_inside(audio_dir, name), group)
                for name, group in selections.groupby(names, sort=False)]
    stem = table_path.name
    for suffix in RAVEN_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    candidates = sorted(p for p in audio_dir.glob(f"{stem}.*") if is_audio_file(p))
    if not candidates:
        raise FileNotFoundError(f"no recording named {stem}.* in {audio_dir} for {table_path}")
    return [(candidates[0], selections)]


def _events(selections: pd.DataFrame,
            common_to_species: dict[str, str]) -> list[tuple[float, float, str]]:
    """(begin, end, species) of each selection, in seconds within its recording."""
    events = []
    for _, sel in selections.iterrows():
        species = _species_of_selection(sel, common_to_species)
        begin, end = float(sel["Begin Time (s)"]), float(sel["End Time (s)"])
        if "File Offset (s)" in selections.columns:  # combined tables run on across files
            begin, end = float(sel["File Offset (s)"]), float(sel["File Offset (s)"]) + \
                (end - begin)
        if species:
            events.append((begin, end, species))
    return events


def read_segments_raven(folder: Path, audio_dir: Path, segment_s: float,
                        common_to_species: dict[str, str],
                        skipped: list[SkippedFile]) -> pd.DataFrame:
    """Fixed ``segment_s`` segments over each recording with a table, labelled by overlap."""
    if segment_s <= 0:
        raise DatasetError(f"soundscape.segment_s must be positive, got {segment_s}")
    tables = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".txt")
    if not tables:
        raise DatasetError(f"{folder} holds no Raven selection tables (*.txt)")
    events: dict[Path, list[tuple[float, float, str]]] = {}
    durations: dict[Path, float] = {}
    for table_path in tables:
        try:
            selections = pd.read_csv(table_path, sep="\t", keep_default_na=False)
            found = [(audio, _events(part, common_to_species), durations.get(audio)
                      or audio_duration(audio))
                     for audio, part in _recordings_of_table(table_path, selections, audio_dir)]
        except (OSError, ValueError, KeyError, AudioLoadError, FileNotFoundError) as error:
            skipped.append(SkippedFile(str(table_path), f"unusable Raven table: {error}",
                                       "annotations"))
            continue
        for audio, own, duration in found:  # a recording in several tables: events joined
            events.setdefault(audio, []).extend(own)
            durations[audio] = duration
    rows = []
    for audio, duration in durations.items():
        for k in range(max(1, math.ceil(duration / segment_s - 1e-9))):
            a, b = k * segment_s, min((k + 1) * segment_s, duration)
            present = tuple(dict.fromkeys(s for e0, e1, s in events[audio]
                                          if e0 < b and e1 > a))
            rows.append((str(audio), a, b, present))
    return pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))


def load_segments(annotations: Path, audio_dir: Path | None, segment_s: float,
                  common_to_species: dict[str, str] | None,
                  skipped: list[SkippedFile]) -> pd.DataFrame:
    """Segments of every annotated recording that exists; missing recordings are skipped."""
    if not annotations.exists():
        raise FileNotFoundError(
            f"annotations not found: {annotations}. Set benchmark.paths.annotations to a CSV "
            "(file,start,end,species) or a folder of Raven selection tables"
        )
    audio_dir = audio_dir or (annotations if annotations.is_dir() else annotations.parent)
    if annotations.is_dir():
        segments = read_segments_raven(annotations, audio_dir, segment_s,
                                       {k.lower(): v for k, v in (common_to_species or {}).items()},
                                       skipped)
    else:
        segments = read_segments_csv(annotations, audio_dir)
    present = {f: Path(f).is_file() for f in segments["file"].unique()}
    for name, ok in present.items():
        if not ok:
            skipped.append(SkippedFile(name, "annotated recording not found", "annotations"))
    segments = segments[segments["file"].map(present)].reset_index(drop=True)
    if segments.empty:
        raise DatasetError(f"none of the recordings annotated in {annotations} were found in "
                           f"{audio_dir}; set benchmark.paths.soundscape_audio_dir")
    return segments.sort_values(["file", "start"], kind="stable").reset_index(drop=True)


def target_sets(segments: pd.DataFrame, species: Sequence[str]) -> list[tuple[str, ...]]:
    """Per segment, the annotated species the model knows (others count as no target)."""
    known = set(species)
    return [tuple(s for s in present if s in known) for present in segments["species"]]

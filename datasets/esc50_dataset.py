"""ESC-50 as a source of ``no_birds`` examples: layout checks, category choice, grouping, download.

ESC-50 (https://github.com/karolpiczak/ESC-50) holds 2000 five-second clips of 50 sound
categories. Its non-bird categories are realistic "something is making noise, but no bird"
material. Expected layout::

    <esc50_dir>/audio/<fold>-<src_file>-<take>-<target>.wav
    <esc50_dir>/meta/esc50.csv      (filename,fold,target,category,esc10,src_file,take)

Several clips are often cut from one source recording (``src_file``); they share background
and recording chain, so they are one group and never end up on both sides of a split.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from common.classes import NO_BIRDS
from common.skipped_files import SkippedFile
from datasets.split_manifest import DatasetError, SourceFile, build_split_manifest

log = logging.getLogger(__name__)

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
# The source name is kept as a literal here (and checked against no_birds.ESC50 in the tests)
# so that fetching ESC-50 does not have to import torch.
ESC50_SOURCE = "esc50"

# Bird categories are never no_birds material, whatever the configuration says: training
# a "no birds" class on crows and roosters would teach the model to ignore birds.
BIRD_CATEGORIES: tuple[str, ...] = ("chirping_birds", "crow", "hen", "rooster")

ESC50_COLUMNS: tuple[str, ...] = (
    "filename", "fold", "target", "category", "esc10", "src_file", "take",
)
AUDIO_SUBDIR = "audio"
META_CSV = "meta/esc50.csv"

# ``build_split_manifest`` takes ``match.group(0)`` of one regex over the file name, so the
# src_file has to be the whole match: look-behind on the fold, look-ahead on take/target.
# Prefer ``esc50_split_manifest``: this regex is applied to every file of a manifest, and a
# bird file named like an ESC-50 clip would be grouped the same way.
ESC50_GROUP_REGEX = r"(?<=^\d-)[^-]+(?=-[A-Za-z]+-\d+\.\w+$)"
_ESC50_NAME = re.compile(
    r"^(?P<fold>\d+)-(?P<src_file>[^-]+)-(?P<take>[A-Za-z]+)-(?P<target>\d+)\.\w+$"
)

DOWNLOAD_CHUNK_BYTES = 1 << 20
# Per socket operation, not for the whole ~600 MB transfer.
DOWNLOAD_TIMEOUT_S = 60.0


# --- metadata and clips ---------------------------------------------------------------------


def _manual_instructions(esc50_dir: Path) -> str:
    return (
        f"Put ESC-50 at '{esc50_dir}' so that the clips are '{esc50_dir}/{AUDIO_SUBDIR}/*.wav' "
        f"and the table is '{esc50_dir}/{META_CSV}': download {ESC50_URL} (about 600 MB), "
        f"unzip it and rename its 'ESC-50-master' folder to '{esc50_dir}'"
    )


def _missing_message(esc50_dir: Path, what: str) -> str:
    return (
        f"ESC-50 not found: {what}. {_manual_instructions(esc50_dir)}; or set "
        "dataset.esc50_download=true to fetch it automatically (or set "
        "dataset.esc50_no_bird_ratio=0 to train without ESC-50)."
    )


def _layout_problem(esc50_dir: Path) -> str | None:
    """What is missing from the official layout, or None when it is complete."""
    if not esc50_dir.is_dir():
        return f"folder '{esc50_dir}' does not exist"
    if not (esc50_dir / META_CSV).is_file():
        return f"'{esc50_dir / META_CSV}' is missing"
    audio_dir = esc50_dir / AUDIO_SUBDIR
    if not audio_dir.is_dir():
        return f"folder '{audio_dir}' is missing"
    if next(audio_dir.glob("*.wav"), None) is None:
        return f"folder '{audio_dir}' holds no .wav files"
    return None


def load_esc50_metadata(esc50_dir: str | Path) -> pd.DataFrame:
    """``meta/esc50.csv`` as a table, after checking the folder layout and the columns."""
    esc50_dir = Path(esc50_dir)
    problem = _layout_problem(esc50_dir)
    if problem:
        raise DatasetError(_missing_message(esc50_dir, problem))
    csv_path = esc50_dir / META_CSV
    try:
        # src_file and take are identifiers: as text they keep leading zeros and compare with
        # the file names.
        meta = pd.read_csv(
            csv_path, dtype={"filename": str, "category": str, "src_file": str, "take": str}
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(f"Cannot read ESC-50 metadata '{csv_path}': {error}") from error
    missing = [c for c in ESC50_COLUMNS if c not in meta.columns]
    if missing:
        raise DatasetError(
            f"ESC-50 metadata '{csv_path}' lacks columns {missing} (found {list(meta.columns)}); "
            f"expected the official header {','.join(ESC50_COLUMNS)}"
        )
    if meta.empty:
        raise DatasetError(f"ESC-50 metadata '{csv_path}' lists no clips")
    meta["category"] = meta["category"].str.strip()
    return meta


def _wanted_categories(meta: pd.DataFrame, categories: Sequence[str] | None) -> list[str]:
    """The non-bird categories to use, validated against the ones present in the table."""
    present = sorted(set(meta["category"]))
    usable = [c for c in present if c not in BIRD_CATEGORIES]
    if categories is None:
        return usable
    if isinstance(categories, str):
        # A lone name in a config file ('esc50_categories: rain') means that one category.
        categories = [categories]
    wanted = list(dict.fromkeys(str(c).strip() for c in categories))
    if not wanted:
        raise DatasetError(
            "dataset.esc50_categories is empty; list non-bird categories or use null for all"
        )
    birds = [c for c in wanted if c in BIRD_CATEGORIES]
    if birds:
        raise DatasetError(
            f"ESC-50 categories {birds} are bird sounds and can never be no_birds examples "
            f"(bird categories: {list(BIRD_CATEGORIES)}); remove them from "
            "dataset.esc50_categories"
        )
    unknown = [c for c in wanted if c not in present]
    if unknown:
        raise DatasetError(
            f"Unknown ESC-50 categories {unknown}; valid non-bird categories: {usable}"
        )
    return wanted


def no_bird_clips(
    esc50_dir: str | Path,
    categories: Sequence[str] | None = None,
    skipped: list[SkippedFile] | None = None,
) -> list[SourceFile]:
    """ESC-50 clips of the wanted non-bird categories (all of them when ``categories`` is None).

    Paths are relative to ``esc50_dir`` ('audio/<filename>'), labelled ``no_birds``. Clips
    listed in the table but absent from ``audio/`` are left out and, when ``skipped`` is
    given, reported there.
    """
    esc50_dir = Path(esc50_dir)
    meta = load_esc50_metadata(esc50_dir)
    wanted = _wanted_categories(meta, categories)
    rows = meta[meta["category"].isin(wanted)].sort_values("filename")
    clips: list[SourceFile] = []
    missing = 0
    for filename in rows["filename"]:
        rel = f"{AUDIO_SUBDIR}/{filename}"
        if (esc50_dir / rel).is_file():
            clips.append(SourceFile(rel, NO_BIRDS, ESC50_SOURCE))
            continue
        missing += 1
        if skipped is not None:
            skipped.append(
                SkippedFile(str(esc50_dir / rel), "listed in meta/esc50.csv but missing", "scan")
            )
    if missing:
        log.warning("%d ESC-50 clips listed in %s are missing from %s", missing,
                    esc50_dir / META_CSV, esc50_dir / AUDIO_SUBDIR)
    log.info("ESC-50: %d no_birds clips from %d categories", len(clips), len(wanted))
    return clips


# --- grouping and splits --------------------------------------------------------------------


def esc50_group(path_or_filename: str | Path) -> str:
    """The ``src_file`` encoded in an ESC-50 clip name; the file stem for other names."""
    name = Path(path_or_filename).name
    match = _ESC50_NAME.match(name)
    if match:
        return match.group("src_file")
    # Not an ESC-50 name: one group per file, the same fallback as recording_group().
    return Path(name).stem


def esc50_split_manifest(
    files: Sequence[SourceFile],
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
) -> pd.DataFrame:
    """Split manifest rows for ESC-50 clips, grouped by ``src_file`` (group 'esc50:<src_file>').

    Deterministic for a seed; the allocation itself is ``build_split_manifest``'s.
    """
    return build_split_manifest(files, ratios, seed, group_of=lambda f: esc50_group(f.path))


# --- download -------------------------------------------------------------------------------


class _DownloadFailed(Exception):
    """Why fetching or unpacking the archive failed (wrapped in a DatasetError for the user)."""


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream_to_file(url: str, dest: Path, timeout: float) -> str:
    """Download ``url`` into ``dest`` with a progress bar; returns the sha256 of the bytes."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            total = _content_length(response)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc="ESC-50") as progress:
                while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise _DownloadFailed(f"the server answered HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise _DownloadFailed(
            f"cannot reach {url} ({error.reason}); this machine may be offline"
        ) from error
    except TimeoutError as error:
        raise _DownloadFailed(f"the connection to {url} timed out; it may be offline") from error
    except (OSError, http.client.HTTPException) as error:  # reset, IncompleteRead, disk full
        raise _DownloadFailed(f"transfer interrupted ({error!r})") from error
    # http.client returns a short body without complaint when the connection closes early.
    if total is not None and received != total:
        raise _DownloadFailed(f"truncated transfer: received {received} of {total} bytes")
    log.info("Downloaded %d bytes from %s", received, url)
    return digest.hexdigest()


def _archive_root(zip_path: Path) -> str:
    """Check the archive and return the folder prefix that holds audio/ and meta/."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise _DownloadFailed(f"the archive is not a readable zip file ({error})") from error
    if bad is not None:
        raise _DownloadFailed(f"the archive is corrupt (bad checksum for '{bad}')")
    metas = sorted((n for n in names if n == META_CSV or n.endswith("/" + META_CSV)), key=len)
    if not metas:
        raise _DownloadFailed(f"the archive contains no '{META_CSV}'")
    prefix = metas[0][: -len(META_CSV)]
    audio_prefix = f"{prefix}{AUDIO_SUBDIR}/"
    if not any(n.startswith(audio_prefix) and n.lower().endswith(".wav") for n in names):
        raise _DownloadFailed(f"the archive contains no '{audio_prefix}*.wav' files")
    return prefix


def _extract(zip_path: Path, prefix: str, work_dir: Path) -> Path:
    """Unpack the dataset part of the archive into ``work_dir``; returns the dataset root."""
    with zipfile.ZipFile(zip_path) as archive:
        members = [n for n in archive.namelist() if n.startswith(prefix)]
        # extractall drops absolute paths and '..' parts, so nothing lands outside work_dir.
        archive.extractall(work_dir, members=members)
    root = work_dir / prefix if prefix else work_dir
    try:
        load_esc50_metadata(root)
    except DatasetError as error:
        raise _DownloadFailed(f"the unpacked archive is not usable ({error})") from error
    return root


def _move_into_place(root: Path, esc50_dir: Path) -> None:
    """Rename the unpacked folder to ``esc50_dir`` in one step: it is complete or absent."""
    if esc50_dir.is_dir() and not any(esc50_dir.iterdir()):
        esc50_dir.rmdir()  # an empty placeholder; os.replace onto a folder is not portable
    try:
        os.replace(root, esc50_dir)
    except OSError as error:
        if _layout_problem(esc50_dir) is None:
            log.info("ESC-50 appeared at %s meanwhile (another run); using it", esc50_dir)
            return
        raise _DownloadFailed(f"cannot move the dataset to '{esc50_dir}' ({error})") from error


def _fetch_esc50(esc50_dir: Path, url: str, expected_sha256: str | None, timeout: float) -> None:
    """Download, verify and unpack; temporary files live next to the target and never stay."""
    parent = esc50_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    stem = f".{esc50_dir.name}.download-"
    handle, zip_name = tempfile.mkstemp(prefix=stem, suffix=".zip.part", dir=parent)
    os.close(handle)
    zip_path = Path(zip_name)
    work_dir: Path | None = None
    try:
        log.info("Downloading ESC-50 from %s (about 600 MB) to %s", url, esc50_dir)
        sha256 = _stream_to_file(url, zip_path, timeout)
        log.info("ESC-50 archive sha256 %s (set dataset.esc50_sha256 to require these bytes)",
                 sha256)
        if expected_sha256 and sha256.lower() != expected_sha256.strip().lower():
            raise _DownloadFailed(
                f"sha256 mismatch: expected {expected_sha256}, got {sha256}"
            )
        prefix = _archive_root(zip_path)
        work_dir = Path(tempfile.mkdtemp(prefix=stem, suffix=".extract", dir=parent))
        root = _extract(zip_path, prefix, work_dir)
        _move_into_place(root, esc50_dir)
    finally:
        # Also on Ctrl-C: a half-downloaded archive or half-unpacked folder is never reused.
        zip_path.unlink(missing_ok=True)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)


def ensure_esc50(
    esc50_dir: str | Path,
    download: bool,
    url: str = ESC50_URL,
    expected_sha256: str | None = None,
    *,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """``esc50_dir`` with the official layout, downloading it first when allowed.

    An existing complete folder is returned without touching the network. Otherwise, with
    ``download`` the archive is streamed, verified (length, zip checksums, contents and
    ``expected_sha256`` when given) and unpacked atomically; any failure raises DatasetError
    with the reason and the manual instructions, leaving no partial folder behind.
    """
    esc50_dir = Path(esc50_dir)
    problem = _layout_problem(esc50_dir)
    if problem is None:
        return esc50_dir
    if not download:
        raise DatasetError(_missing_message(esc50_dir, problem))
    if esc50_dir.exists() and not (esc50_dir.is_dir() and not any(esc50_dir.iterdir())):
        # Never overwrite what the user put there: it may be a partial copy they are fixing.
        raise DatasetError(
            f"ESC-50 folder '{esc50_dir}' exists but is incomplete ({problem}); it is not "
            f"overwritten. Move it away to download again, or complete it: "
            f"{_manual_instructions(esc50_dir)}."
        )
    # The official archive is a snapshot of a moving branch, so there is no fixed checksum to
    # default to; the layout and zip checks below stand in for it.
    try:
        _fetch_esc50(esc50_dir, url, expected_sha256, timeout)
    except _DownloadFailed as error:
        raise DatasetError(
            f"ESC-50 download failed: {error}. {_manual_instructions(esc50_dir)}."
        ) from error
    log.info("ESC-50 ready at %s", esc50_dir)
    return esc50_dir

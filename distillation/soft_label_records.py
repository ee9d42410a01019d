"""The on-disk format of a soft-label folder.

::

    <output>/
      metadata.json                      settings, species order, files done, failures
      files/<key>.npz                    one record per audio file

``key`` is the file's path relative to the bird dataset root (``Bubo_bubo/XC1.mp3``) or, for
pre-generated no-birds samples, ``no_birds/`` + its path relative to that folder. A record
holds, for the n teacher windows of the file:

    starts                (n,)            float64  window start times (s)
    target_logits         (n, n_species)  float32  BirdNET logits, metadata species order
    nonevent_logits       (n, 11)         float32  BirdNET logits, metadata non-event order
    non_target_max_logit  (n,)            float32  strongest other species' logit
    no_birds_logit        (n,)            float32  see birdnet.teacher.no_birds_logit
    embedding             (n, 1024)       float16  BirdNET's embedding (format 2 and later)
    all_logits            (n, 6522)       float16  every BirdNET logit (only with
                                                   --store_all_logits)
    duration_s            ()              float64  length of the decoded audio (s)
    key, settings_hash    ()              str      what the record is, made with which settings
    source_size, source_mtime_ns ()       int64    the audio file it was computed from
    source_sha256         ()              str      its content (records written since format
                                                   2 was extended; older ones lack it)

``metadata.json`` says which of the optional arrays the folder holds (``stored``). Format 1
folders (before embeddings) still load; a recipe that needs what they lack says so.

Records are written to a temporary file and renamed into place, so a record is either complete
or absent. A record is valid when its settings hash matches the folder's and its source size
and mtime match the audio file's current ones, or, with a new mtime, its size and SHA-256 do
(a copied or synced dataset; the record is then restamped). Anything else is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from birdnet.teacher import TeacherSignals
from common.content_hash import Match, SourceStamp, restamp_npz
from common.file_io import write_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
# Format 1 is format 2 without the optional arrays (no "stored" entry in its metadata).
READABLE_FORMATS = (1, 2)
METADATA_FILENAME = "metadata.json"
RECORDS_DIRNAME = "files"
NO_BIRDS_KEY_PREFIX = "no_birds/"
SIGNAL_ARRAYS = ("target_logits", "nonevent_logits", "non_target_max_logit", "no_birds_logit")
OPTIONAL_ARRAYS = ("embedding", "all_logits")  # float16, present when the folder stores them


def signal_arrays(signals: TeacherSignals) -> dict[str, np.ndarray]:
    """The arrays of ``signals`` as stored: float32 signals, float16 optional arrays."""
    arrays = {name: np.asarray(getattr(signals, name), dtype=np.float32) for name in SIGNAL_ARRAYS}
    for name in OPTIONAL_ARRAYS:
        value = getattr(signals, name)
        if value is not None:
            arrays[name] = np.asarray(value, dtype=np.float16)
    return arrays


def settings_hash(settings: dict) -> str:
    """Short digest of everything that changes a record's content."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(output: str | Path, key: str) -> Path:
    # The audio extension stays in the name so "a.wav" and "a.mp3" get separate records.
    return Path(output) / RECORDS_DIRNAME / f"{key}.npz"


def write_record(
    output: str | Path,
    key: str,
    starts: np.ndarray,
    duration_s: float,
    signals: TeacherSignals,
    stamp: SourceStamp,
    settings_digest: str,
) -> Path:
    arrays = {
        "starts": np.asarray(starts, dtype=np.float64),
        **signal_arrays(signals),
        "duration_s": np.float64(duration_s),
        "key": np.str_(key),
        "settings_hash": np.str_(settings_digest),
        **stamp.arrays(),
    }
    return write_atomic(record_path(output, key), lambda handle: np.savez(handle, **arrays))


def read_record(output: str | Path, key: str,
                exclude: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays of a record but ``exclude``; FileNotFoundError or ValueError for a bad file.

    (``all_logits`` is 13 KB a window: a reader that does not use it leaves it on disk.)
    """
    with np.load(record_path(output, key), allow_pickle=False) as data:
        return {name: data[name] for name in data.files if name not in exclude}


def record_status(
    output: str | Path, key: str, stamp: SourceStamp, settings_digest: str
) -> tuple[bool, int, float]:
    """(valid, n_windows, duration_s) of the stored record of ``key``.

    Only the small fingerprint arrays are read, so checking thousands of records is quick.
    """
    path = record_path(output, key)
    if not path.is_file():
        return False, 0, 0.0
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["settings_hash"]) != settings_digest or str(data["key"]) != key:
                return False, 0, 0.0
            match = stamp.compare(data)
            if match is Match.CHANGED:
                return False, 0, 0.0
            status = True, len(data["starts"]), float(data["duration_s"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        # Only possible if something other than write_record wrote there; recompute it.
        log.warning("Unreadable soft-label record %s (%s); recomputing it", path, error)
        return False, 0, 0.0
    if match is Match.SAME_CONTENT:
        restamp_npz(path, stamp.mtime_ns)
    return status


def remove_stale_temporaries(output: str | Path) -> int:
    """Delete temporary files left by a killed run (they are never valid records)."""
    root = Path(output) / RECORDS_DIRNAME
    removed = 0
    if root.is_dir():
        for tmp in root.rglob(".*.part"):
            tmp.unlink(missing_ok=True)
            removed += 1
    for tmp in Path(output).glob(f".{METADATA_FILENAME}.*.part"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def read_metadata(output: str | Path) -> dict | None:
    path = Path(output) / METADATA_FILENAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))

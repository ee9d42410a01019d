"""Resume of a folder run of ``predict.py``: a ledger of the files already analysed.

After each file, one JSON line (its name relative to the input, size, modification time and
detections) is appended to ``predict_progress.jsonl`` in the output folder and synced to
disk. A run killed half-way leaves the ledger plus tables written up to the last flush; the
same command run again skips every file the ledger holds (unchanged on disk, same model and
options) and analyses only the rest. The ledger only ever names files the new run found
itself; it never makes the run open a path it did not find.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from common.safe_paths import storage_error
from edge.detections import Detection
from edge.raven import FileDetections

log = logging.getLogger(__name__)

PROGRESS_NAME = "predict_progress.jsonl"


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [int(stat.st_size), int(stat.st_mtime_ns)]


class ProgressLedger:
    """Files finished under one set of ``settings`` (model, options, input)."""

    def __init__(self, out_dir: Path, settings: dict) -> None:
        self.path = Path(out_dir) / PROGRESS_NAME
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.entries: dict[str, dict] = self._read()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(out_dir, error) from error
        if not self.entries:
            self._start()

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        entries: dict[str, dict] = {}
        with open(self.path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if header.get("settings") != self.settings:
            log.info("%s was made with other settings; analysing every file again", self.path)
            return {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                entries[entry["name"]] = entry
            except (ValueError, KeyError, TypeError):
                break  # a line cut by the kill: everything before it is complete
        return entries

    def _start(self) -> None:
        try:
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps({"settings": self.settings}) + "\n")
        except OSError as error:
            raise storage_error(self.path, error) from error

    def finished(self, name: str, path: Path) -> FileDetections | None:
        """The stored result of ``name`` when the file has not changed since."""
        entry = self.entries.get(name)
        if entry is None or entry.get("stamp") != _stamp(path):
            return None
        detections = [Detection(entry["file"], *d) for d in entry["detections"]]
        return FileDetections(entry["begin_path"], entry["duration_s"], detections,
                              entry["low_freq_hz"], entry["high_freq_hz"])

    def record(self, name: str, path: Path, item: FileDetections) -> None:
        entry = {
            "name": name, "stamp": _stamp(path), "file": name, "begin_path": item.begin_path,
            "duration_s": item.duration_s, "low_freq_hz": item.low_freq_hz,
            "high_freq_hz": item.high_freq_hz,
            "detections": [[d.start, d.end, d.species, d.confidence] for d in item.detections],
        }
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise storage_error(self.path, error) from error
        self.entries[name] = entry

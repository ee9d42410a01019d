"""Find the audio files under a folder, and list every entry that is not used, with why.

Training, soft-label extraction and ``predict.py`` all walk user folders; whatever they
ignore (a folder named ``x.wav``, a symbolic link loop, a sub-folder that cannot be read, a
text file) is reported, never silently dropped. Hidden entries (``.name``) are skipped
quietly: they are tool metadata (``.DS_Store``, ``.git``), not recordings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from datasets.audio_utils import is_audio_file

# (path, reason) -> None; callers wrap it into their own skipped-file record.
Report = Callable[[Path, str], None]


def scan_audio_tree(root: str | Path, report: Report) -> list[Path]:
    """Audio files under ``root`` (symbolic links followed, loops cut), sorted by path."""
    root = Path(root)
    found: list[Path] = []
    _walk(root, {os.path.realpath(root)}, found, report)
    return sorted(found)


def _walk(folder: Path, ancestors: set[str], found: list[Path], report: Report) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as error:
        report(folder, f"cannot read folder ({error.strerror or error})")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow symbolic links
        except OSError as error:
            report(path, f"cannot read entry ({error.strerror or error})")
            continue
        if entry.is_symlink() and not (is_dir or is_file):
            report(path, "broken or looping symbolic link")
        elif is_dir:
            if is_audio_file(path):
                report(path, "a folder named like an audio file (its contents are searched)")
            real = os.path.realpath(path)
            if real in ancestors:
                report(path, "symbolic link loop (points to a folder above it); not followed")
                continue
            _walk(path, ancestors | {real}, found, report)
        elif is_file:
            if is_audio_file(path):
                found.append(path)
            else:
                report(path, "not an audio file extension")
        else:
            report(path, "not a regular file (device, pipe or socket)")

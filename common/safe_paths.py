"""The one rule for paths read from a file (manifests, model.json, checkpoints, ledgers).

A path written in a file is only ever taken relative to the folder it belongs to: it must be
relative and may not climb out with ``..``. Symlinks the user placed inside a data folder are
the user's own choice and are followed; what a file *says* cannot point elsewhere. Nothing
here imports more than the standard library, so the edge runtime can use it on a device.

File names are kept as Python strings with undecodable bytes as surrogates (how ``os``
returns them), so a name that is not valid UTF-8 round-trips through our CSV files;
:func:`display_path` makes such a name printable for messages.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from common.errors import UserError


class UnsafePathError(UserError, ValueError):
    """A path read from a file points outside the folder it belongs to."""


def path_inside(root: str | Path, relative: str, what: str) -> Path:
    """``root / relative`` when ``relative`` stays inside ``root``; else UnsafePathError.

    ``what`` names where the path was read (shown in the message), e.g. "split manifest x.csv".
    """
    text = str(relative)
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    if not text or text.startswith(("/", "\\")) or posix.is_absolute() or windows.drive:
        reason = "is empty" if not text else "is absolute"
    elif ".." in posix.parts or ".." in windows.parts or "\x00" in text:
        reason = "leaves its folder"
    else:
        return Path(root) / text
    raise UnsafePathError(
        f"{what}: the path '{display_path(text)}' {reason}; paths in this file must be "
        f"relative to '{display_path(root)}' and stay inside it. Regenerate the file or fix "
        "that row."
    )


def plain_file_name(name: str, what: str) -> str:
    """A bare file name (no folder part) read from a file; else UnsafePathError."""
    path_inside(".", name, what)
    if "/" in name or "\\" in name or name in (".", ""):
        raise UnsafePathError(
            f"{what}: '{display_path(name)}' is not a plain file name; regenerate the file"
        )
    return name


def display_path(path: str | Path) -> str:
    """A printable form of a path whose name may hold bytes that are not UTF-8 (as \\xNN)."""
    text = os.fspath(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# Errors of the storage itself (not of one input file): the run cannot go on usefully.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class StorageError(UserError, OSError):
    """An output could not be written (disk full, read-only, no permission)."""


def storage_error(path: str | Path, error: OSError) -> StorageError:
    hint = {
        errno.ENOSPC: "the disk is full; free space or point the output elsewhere",
        errno.EDQUOT: "the disk quota is exhausted; free space or point the output elsewhere",
        errno.EROFS: "the file system is read-only; choose a writable folder",
        errno.EACCES: "no permission to write there; choose a writable folder",
        errno.EPERM: "no permission to write there; choose a writable folder",
        errno.EFBIG: "the file is too large for this file system",
    }.get(error.errno or -1, "check that the disk has space and the folder is writable")
    return StorageError(
        error.errno or errno.EIO,
        f"cannot write '{display_path(path)}': {error.strerror or error} ({hint})",
    )


def bytes_safe_output() -> None:
    """Let log handlers and stdout write any file name (undecodable bytes as \\xNN) instead of
    failing on it: Hydra's train.log and a UTF-8 stdout encode strictly by default."""
    import logging
    import sys

    streams = [getattr(h, "stream", None) for h in logging.getLogger().handlers]
    for stream in [*streams, sys.stdout, sys.stderr]:
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or unusual stream: leave it as it is
                pass

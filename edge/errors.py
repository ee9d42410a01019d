"""The user-facing error of the edge tools and the CLI wrapper that turns it into exit code 2."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


class EdgeError(RuntimeError):
    """A problem the user can fix (bad path, bad option, missing data); the message says how."""


@contextlib.contextmanager
def exit_on_user_error(log: logging.Logger) -> Iterator[None]:
    """Print a user error as one line and exit 2, without a traceback.

    Unlike ``cli_errors.exit_on_user_error`` this imports no training code: on a device,
    predict.py must run with numpy, soundfile and onnxruntime alone. Loaders convert the
    project's own errors (``CheckpointError``...) into ``EdgeError`` at their boundary.
    """
    from datasets.safe_paths import (
        StorageError,
        UnsafePathError,
        bytes_safe_output,
        display_path,
    )

    bytes_safe_output()
    try:
        yield
    except (EdgeError, FileNotFoundError, UnsafePathError, StorageError) as error:
        log.debug("user error", exc_info=True)
        print(f"error: {display_path(str(error))}", file=sys.stderr)
        sys.exit(2)

"""Turn the errors a user can cause into one clear message and a non-zero exit."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def exit_on_user_error(log: logging.Logger) -> Iterator[None]:
    """Bad data, config or checkpoint: log the message, print it, exit 2 (no traceback)."""
    from datasets.split_manifest import DatasetError
    from models import CheckpointError
    from training.run import ConfigError

    try:
        yield
    except (DatasetError, ConfigError, CheckpointError, FileNotFoundError) as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

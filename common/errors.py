"""The user-error type and the one place that turns it into a message and exit code 2.

Every error a user can cause and fix (a missing folder, an unknown species, a bad option, a
checkpoint from elsewhere) is a :class:`UserError`; each keeps its own second base
(``ValueError``, ``OSError``...) so callers can still catch it as before. Only the standard
library is imported here: the device-side ``predict`` uses this too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work (type, range, unknown species, missing data)."""


@contextlib.contextmanager
def exit_on_user_error(log: logging.Logger) -> Iterator[None]:
    """Log and print a user error as one line and exit 2 (no traceback); a missing file
    counts as a user error too."""
    from common.safe_paths import bytes_safe_output, display_path

    bytes_safe_output()
    try:
        yield
    except (UserError, FileNotFoundError) as error:
        message = display_path(str(error))  # a file name may hold bytes that are not UTF-8
        log.debug("user error", exc_info=True)
        log.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)

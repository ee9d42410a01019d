"""The user error of the edge tools (bad path, bad option, missing data): the message says how
to fix it; ``common.errors.exit_on_user_error`` turns it into exit code 2."""

from __future__ import annotations

from common.errors import UserError


class EdgeError(UserError, RuntimeError):
    """A problem the user can fix on the device or the export machine."""

"""Turn the errors a user can cause into one clear message and a non-zero exit."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def exit_on_user_error(log: logging.Logger) -> Iterator[None]:
    """Bad data, config or checkpoint: log the message, print it, exit 2 (no traceback)."""
    from datasets.audio_utils import AudioLoadError
    from datasets.safe_paths import (
        StorageError,
        UnsafePathError,
        bytes_safe_output,
        display_path,
    )
    from datasets.split_manifest import DatasetError
    from distillation.datasets.soft_label_dataset import MissingSoftLabelsError
    from distillation.losses.class_weights import ClassWeightError
    from distillation.soft_labels import SoftLabelError
    from distillation.species_names import UnknownSpeciesError
    from models import CheckpointError
    from training.run import ConfigError

    user_errors = (DatasetError, ConfigError, CheckpointError, FileNotFoundError,
                   AudioLoadError, MissingSoftLabelsError, ClassWeightError, SoftLabelError,
                   UnknownSpeciesError, UnsafePathError, StorageError)
    bytes_safe_output()
    try:
        yield
    except user_errors as error:
        message = display_path(str(error))  # a file name may hold bytes that are not UTF-8
        log.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)

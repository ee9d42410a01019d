"""Shared fixtures: generated audio, the demo corpus, and the real recordings in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def _need_shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if path.is_dir():
        return path
    message = f"real recordings not found at {path} (set SHARED_DATA_DIR or add ../shared/data)"
    if os.environ.get("REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message + "; REQUIRE_SHARED_DATA=1 makes this a failure")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_bird_dir() -> Path:
    return _need_shared("bird_sound_dataset")


@pytest.fixture(scope="session")
def shared_esc50_dir() -> Path:
    return _need_shared("esc50")


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """A small demo corpus, generated once per test session."""
    from demo.corpus import generate_demo_corpus

    return generate_demo_corpus(tmp_path_factory.mktemp("demo"), seed=0, recordings_per_species=6)


def tone_burst(sr: int, freq: float, duration: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * duration)) / sr
    envelope = np.hanning(len(t))
    return (amplitude * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, sr: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr)
    return path


@pytest.fixture(scope="session")
def demo_soft_labels(demo_corpus, tmp_path_factory):
    """BirdNET soft labels for the demo corpus (a coarse 3 s hop keeps this quick)."""
    from distillation.soft_labels import extract_soft_labels

    out = tmp_path_factory.mktemp("soft_labels") / "demo"
    extract_soft_labels(list(demo_corpus.species), out, demo_corpus.bird_dir, hop=3.0,
                        progress=False)
    return out


# A small model trained on the demo corpus (with its split manifest) and its export, each made
# once per test session (training ~15 s, export ~20 s on 2 cores).
# Enough for the demo corpus' four synthetic calls at this learning rate (planted-call recall
# ~0.95 after 20-25 epochs, ~0.6 after 10), few enough to keep the suite quick (~1 s/epoch).
DEMO_EPOCHS = 20
DEMO_LR = 0.003


@pytest.fixture(scope="session")
def demo_checkpoint(demo_corpus, tmp_path_factory) -> Path:
    from tests.training.helpers import compose_config, fast_overrides
    from training.run import run_training

    tmp = tmp_path_factory.mktemp("edge_train")
    overrides = fast_overrides(demo_corpus.bird_dir, tmp, epochs=DEMO_EPOCHS) + [
        f"dataset.esc50_dir={demo_corpus.esc50_dir}",
        f"optimizer.lr={DEMO_LR}",
        f"training.patience={DEMO_EPOCHS}",
    ]
    run_training(compose_config(overrides), tmp / "run")
    return tmp / "run" / "best_model.pt"


@pytest.fixture(scope="session")
def exported_dir(demo_checkpoint, tmp_path_factory) -> Path:
    from export.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("edge_export") / "exported"
    export_checkpoint(demo_checkpoint, out, calibration_windows=100)
    return out

"""Fixtures of the edge tests: one small model trained on the demo corpus and its export,
each made once per test session (training ~15 s, export ~20 s on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import compose_config, fast_overrides

# Enough for the demo corpus' four synthetic calls at this learning rate (planted-call recall
# ~0.95 after 20-25 epochs, ~0.6 after 10), few enough to keep the suite quick (~1 s/epoch).
DEMO_EPOCHS = 20
DEMO_LR = 0.003


@pytest.fixture(scope="session")
def demo_checkpoint(demo_corpus, tmp_path_factory) -> Path:
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
    from edge.export import export_checkpoint

    out = tmp_path_factory.mktemp("edge_export") / "exported"
    export_checkpoint(demo_checkpoint, out, calibration_windows=100)
    return out

"""The scoreboard's embedding cosine: student projection against BirdNET's standardised
embedding of the same windows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from evaluation.birdnet_windows import FileWindows
from evaluation.embedding_fidelity import embedding_fidelity

SAMPLE_RATE = 16000
CHECKPOINT = SimpleNamespace(audio=SimpleNamespace(sample_rate=SAMPLE_RATE, clip_duration=1.0))


class FixedProjection(torch.nn.Module):
    """A 'student' whose projection is the same vector for every window."""

    def __init__(self, vector: np.ndarray | None):
        super().__init__()
        self.projection = None if vector is None else torch.nn.Identity()
        self.vector = None if vector is None else torch.tensor(vector, dtype=torch.float32)

    def forward(self, audio: torch.Tensor, return_embedding: bool = False):
        logits = torch.zeros(len(audio), 3)
        return (logits, self.vector.expand(len(audio), -1)) if return_embedding else logits


class FakeCache:
    """BirdNET windows every 1 s, each file's windows all holding one embedding."""

    def __init__(self, embeddings: dict[str, np.ndarray]):
        self.embeddings = embeddings

    def get(self, path: str) -> FileWindows:
        rows = np.tile(self.embeddings[path], (3, 1)).astype(np.float16)
        return FileWindows(np.arange(3, dtype=np.float32), np.zeros((3, 5), np.float16), rows)


@pytest.fixture()
def two_files(tmp_path):
    paths = []
    for name in ("a.wav", "b.wav"):
        path = tmp_path / name
        sf.write(path, np.random.default_rng(0).normal(0, 0.1, 3 * SAMPLE_RATE), SAMPLE_RATE)
        paths.append(str(path))
    rng = np.random.default_rng(1)
    # Far apart in every dimension, so no per-dimension deviation hits the floor; as stored.
    a = rng.uniform(0, 2, 1024).astype(np.float16).astype(np.float64)
    b = (a + rng.uniform(2, 4, 1024)).astype(np.float16).astype(np.float64)
    return paths, FakeCache({paths[0]: a, paths[1]: b}), a, b


def test_a_projection_equal_to_the_standardised_target_scores_one(two_files):
    (file_a, file_b), cache, a, b = two_files
    # Standardised over the two training files, a and b are exact opposites.
    mean, sd = (a + b) / 2, np.abs(a - b) / 2
    standardised_a = (a - mean) / sd
    model = FixedProjection(standardised_a)
    fidelity = embedding_fidelity(model, CHECKPOINT, [file_a, file_b], [file_a], cache,
                                  hop_s=0.5)
    assert fidelity["embedding_cosine"] == pytest.approx(1.0, abs=1e-3)
    # Training windows: half match (a), half are the opposite (b), so the mean is 0.
    assert fidelity["embedding_cosine_train"] == pytest.approx(0.0, abs=1e-3)
    opposite = embedding_fidelity(FixedProjection(-standardised_a), CHECKPOINT,
                                  [file_a, file_b], [file_a], cache, hop_s=0.5)
    assert opposite["embedding_cosine"] == pytest.approx(-1.0, abs=1e-3)


def test_no_figure_without_a_projection_head(two_files):
    (file_a, file_b), cache, _, _ = two_files
    assert embedding_fidelity(FixedProjection(None), CHECKPOINT, [file_a, file_b], [file_a],
                              cache, hop_s=0.5) == {}

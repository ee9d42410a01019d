"""How closely the student's projection reproduces BirdNET's embedding, per fold.

The embedding recipe trains a projection head to BirdNET's standardised 1024-d embedding
(`distillation.embedding_weight`). What the student can pass on to recordings it never
heard is bounded by how well that imitation holds on them, so each fold reports the mean
cosine between the projection and BirdNET's standardised embedding over the windows of its
held-out species recordings (``embedding_cosine``) and, for comparison, over its training
species recordings (``embedding_cosine_train``): both low means the student cannot fit the
embedding; training high and held-out low means it fits what it heard and does not carry it
further. Standardisation uses the BirdNET windows of all the fold's training files (species
recordings and no_birds clips), as training standardises over its training side.

Models without a projection head (the exported student, other recipes) have no such figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from datasets.audio_utils import AudioLoadError, load_audio
from datasets.windows import sliding_windows
from distillation.losses.embedding import embedding_statistics
from evaluation.birdnet_windows import BirdNetWindowCache
from model_checkpoint import Checkpoint


@torch.no_grad()
def _window_cosines(model: torch.nn.Module, checkpoint: Checkpoint, files: Sequence[str],
                    cache: BirdNetWindowCache, hop_s: float, mean: np.ndarray,
                    scale: np.ndarray, batch_size: int) -> list[float]:
    """Cosine of each student window's projection with BirdNET's window covering it."""
    sample_rate = int(checkpoint.audio.sample_rate)
    clip_s = float(checkpoint.audio.clip_duration)
    cosines: list[float] = []
    for file in files:
        try:
            audio, _ = load_audio(file, sample_rate)
        except AudioLoadError:
            continue  # already counted among the skipped files by the student's scoring
        starts, windows = sliding_windows(audio, sample_rate, clip_s, hop_s)
        teacher = cache.get(file)
        target = np.stack([teacher.embeddings[teacher.nearest(float(s), clip_s)]
                           for s in starts]).astype(np.float32)
        target = (target - mean) / scale
        for first in range(0, len(windows), batch_size):
            batch = torch.from_numpy(windows[first:first + batch_size])
            _, projection = model(batch, return_embedding=True)
            rows = torch.from_numpy(target[first:first + batch_size])
            cosines.extend(torch.nn.functional.cosine_similarity(projection, rows).tolist())
    return cosines


def embedding_fidelity(model: torch.nn.Module, checkpoint: Checkpoint,
                       train_files: Sequence[str], test_files: Sequence[str],
                       cache: BirdNetWindowCache, hop_s: float,
                       statistics_files: Sequence[str] = (),
                       batch_size: int = 64) -> dict[str, float]:
    """``{"embedding_cosine": held-out mean, "embedding_cosine_train": training mean}`` over
    the windows of ``test_files`` / ``train_files`` (species recordings), standardised over
    ``train_files`` and ``statistics_files`` (the rest of the training side, such as its
    no_birds clips); empty for a model without a projection head."""
    if getattr(model, "projection", None) is None or not train_files:
        return {}
    mean, scale = (t.numpy() for t in embedding_statistics(
        [cache.get(f).embeddings.astype(np.float32)
         for f in sorted({*train_files, *statistics_files})]))
    model = model.to("cpu").eval()
    result = {}
    for name, files in (("embedding_cosine", test_files),
                        ("embedding_cosine_train", train_files)):
        cosines = _window_cosines(model, checkpoint, files, cache, hop_s, mean, scale,
                                  batch_size)
        if cosines:
            result[name] = float(np.mean(cosines))
    return result

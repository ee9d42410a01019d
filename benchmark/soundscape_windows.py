"""Window scores of whole recordings for the student and BirdNET, cached per recording.

Both models slide their 3 s window over each recording at their hop; the student's scores are
its softmax probabilities, BirdNET's its sigmoid scores for the student's species. Scores of
one recording are stored in ``<cache>/<model>/<recording>.<key>.csv`` as soon as it is done,
where the key covers the recording's content, the model and its settings: a re-run (or a run
that was stopped) recomputes only what is missing or changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmark import stage_cache
from common.skipped_files import SkippedFile
from datasets.audio_utils import AudioLoadError, load_audio, sliding_window_starts
from datasets.windows import cut_windows

log = logging.getLogger(__name__)

# Part of every cache key: bump when window scoring changes its output.
WINDOW_CODE_VERSION = 1
CHUNK_WINDOWS = 64  # windows built at once: bounds memory on hour-long recordings

ScoreBatch = Callable[[np.ndarray], np.ndarray]  # (n, samples) -> (n, n_species)


def window_batches(audio: np.ndarray, sample_rate: int, clip_s: float, hop_s: float,
                   chunk: int = CHUNK_WINDOWS) -> Iterator[tuple[list[float], np.ndarray]]:
    """(starts, windows) chunks over a whole recording, last window aligned to its end."""
    length = int(round(clip_s * sample_rate))
    starts = sliding_window_starts(len(audio) / sample_rate, clip_s, hop_s)
    for i in range(0, len(starts), chunk):
        part = starts[i : i + chunk]
        yield part, cut_windows(audio, sample_rate, part, length)


def score_recording(path: str, score: ScoreBatch, sample_rate: int, clip_s: float,
                    hop_s: float, species: Sequence[str]) -> pd.DataFrame:
    audio, _ = load_audio(path, sample_rate)
    starts, scores = [], []
    for part, windows in window_batches(audio, sample_rate, clip_s, hop_s):
        starts += part
        scores.append(score(windows))
    table = pd.DataFrame(np.concatenate(scores).round(6), columns=list(species))
    table.insert(0, "end", np.round(np.asarray(starts) + clip_s, 4))
    table.insert(0, "start", np.round(starts, 4))
    table.insert(0, "file", path)
    return table


def cached_window_scores(files: Sequence[str], model_name: str, model_key: object,
                         cache_dir: Path, score: ScoreBatch | Callable[[], ScoreBatch],
                         sample_rate: int, clip_s: float, hop_s: float,
                         species: Sequence[str], skipped: list[SkippedFile],
                         lazy: bool = False) -> pd.DataFrame:
    """Window scores of every file (cached per file). With ``lazy``, ``score`` is a factory
    called only when some file is not cached (BirdNET is not even loaded on a full cache)."""
    folder = cache_dir / model_name
    folder.mkdir(parents=True, exist_ok=True)
    tables = []
    scorer = None if lazy else score
    for path in tqdm(files, desc=f"{model_name} windows", unit="recording"):
        key = stage_key_for(path, model_key, sample_rate, clip_s, hop_s, species)
        csv_path = folder / f"{Path(path).stem}.{key[:16]}.csv"
        table = stage_cache.reuse(csv_path, key)
        if table is None:
            if scorer is None:
                scorer = score()
            try:
                table = score_recording(path, scorer, sample_rate, clip_s, hop_s, species)
            except AudioLoadError as error:
                skipped.append(SkippedFile(path, str(error), model_name))
                continue
            stage_cache.save(table, csv_path, key)
        else:
            log.debug("%s: reusing %s", model_name, csv_path)
        table["file"] = path  # the cache may come from another checkout of the same audio
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=["file", "start", "end", *species])
    return pd.concat(tables, ignore_index=True)


def stage_key_for(path: str, model_key: object, sample_rate: int, clip_s: float, hop_s: float,
                  species: Sequence[str]) -> str:
    return stage_cache.stage_key(version=WINDOW_CODE_VERSION, audio=stage_cache.file_digest(path),
                                 model=model_key, sample_rate=sample_rate, clip=clip_s,
                                 hop=hop_s, species=list(species))


def student_scorer(model, device, batch_size: int, n_species: int) -> ScoreBatch:
    import torch

    @torch.no_grad()
    def score(windows: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(windows), batch_size):
            batch = torch.from_numpy(windows[i : i + batch_size]).to(device)
            out.append(torch.softmax(model(batch), dim=1)[:, :n_species].cpu().numpy())
        return np.concatenate(out)

    return score


def birdnet_scorer(species: Sequence[str], settings) -> ScoreBatch:
    """BirdNET's sigmoid scores for ``species`` (48 kHz windows); location filter as in the
    file benchmark (``birdnet.lat/lon/week``)."""
    from birdnet.teacher import BirdNetTeacher, sigmoid

    teacher = BirdNetTeacher(num_threads=int(settings.num_threads),
                             batch_size=int(settings.batch_size))
    indices = teacher.species_indices(species)
    plausible = np.ones(len(species))
    if settings.lat is not None and settings.lon is not None:
        allowed = teacher.plausible_species(float(settings.lat), float(settings.lon),
                                            int(settings.week))
        plausible = np.array([teacher.labels[i] in allowed for i in indices], dtype=float)

    def score(windows: np.ndarray) -> np.ndarray:
        return sigmoid(teacher.logits(windows)[:, indices], float(settings.sensitivity)) * plausible

    return score

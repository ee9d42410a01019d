"""BirdNET predictions on the same files: 48 kHz windows, restricted to the student's species."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from benchmark.scoring import aggregate, predictions_table
from common.skipped_files import SkippedFile
from datasets.audio_utils import AudioLoadError, load_audio
from datasets.windows import sliding_windows

log = logging.getLogger(__name__)


def birdnet_file_scores(window_logits: np.ndarray, indices: list[int], sensitivity: float,
                        aggregation: str, plausible: np.ndarray | None = None) -> np.ndarray:
    """One file's species scores from its window logits (n_windows, 6522): BirdNET's
    confidences of the student's species, optionally location-filtered, aggregated."""
    from birdnet.teacher import sigmoid

    probs = sigmoid(np.atleast_2d(window_logits)[:, indices].astype(np.float32), sensitivity)
    if plausible is not None:
        probs = probs * plausible
    return aggregate(probs, aggregation)


def predict_birdnet(class_names: list[str], truth: pd.DataFrame, cfg: DictConfig,
                    skipped: list[SkippedFile]) -> pd.DataFrame:
    from birdnet.teacher import BirdNetTeacher

    settings = cfg.birdnet
    teacher = BirdNetTeacher(num_threads=int(settings.num_threads),
                             batch_size=int(settings.batch_size))
    species = class_names[:-1]
    indices = teacher.species_indices(species)  # unknown species -> clear error
    plausible = None
    if settings.lat is not None and settings.lon is not None:
        allowed = teacher.plausible_species(float(settings.lat), float(settings.lon),
                                            int(settings.week))
        plausible = np.array([teacher.labels[i] in allowed for i in indices])
        log.info("Location filter keeps %d of %d species", int(plausible.sum()), len(species))
    files, labels, scores, counts = [], [], [], []
    for row in tqdm(truth.itertuples(), total=len(truth), desc="BirdNET", unit="file"):
        try:
            audio, _ = load_audio(row.file, teacher.sample_rate)
        except AudioLoadError as error:
            skipped.append(SkippedFile(row.file, str(error), "birdnet"))
            continue
        _, windows = sliding_windows(audio, teacher.sample_rate, teacher.window_s,
                                     float(settings.hop_s))
        files.append(row.file)
        labels.append(row.label)
        scores.append(birdnet_file_scores(teacher.logits(windows), indices,
                                          float(settings.sensitivity), str(settings.aggregation),
                                          plausible))
        counts.append(len(windows))
    species_scores = np.array(scores) if scores else np.zeros((0, len(species)))
    return predictions_table(files, labels, class_names, species_scores,
                             float(settings.confidence_threshold), counts)

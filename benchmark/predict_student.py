"""Student predictions: 3 s windows slid over each whole file, scored by the checkpoint."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from benchmark.scoring import aggregate, aggregate_no_birds, predictions_table
from common.runtime import resolve_device
from common.skipped_files import SkippedFile
from datasets.audio_utils import AudioLoadError, load_audio
from datasets.windows import sliding_windows
from model_checkpoint import Checkpoint

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_student(model: torch.nn.Module, checkpoint: Checkpoint, truth: pd.DataFrame,
                    cfg: DictConfig, skipped: list[SkippedFile]) -> pd.DataFrame:
    inference = cfg.student_model.inference
    device = resolve_device(inference.device, "student_model.inference.device")
    model = model.to(device).eval()
    class_names = list(checkpoint.class_names)
    sample_rate = int(checkpoint.audio.sample_rate)
    clip_s = float(checkpoint.audio.clip_duration)
    files, labels, scores, no_birds, counts = [], [], [], [], []
    for row in tqdm(truth.itertuples(), total=len(truth), desc="Student", unit="file"):
        try:
            audio, _ = load_audio(row.file, sample_rate)
        except AudioLoadError as error:
            skipped.append(SkippedFile(row.file, str(error), "student"))
            continue
        _, windows = sliding_windows(audio, sample_rate, clip_s, float(inference.hop_s))
        probs = []
        for start in range(0, len(windows), int(inference.batch_size)):
            batch = torch.from_numpy(windows[start : start + int(inference.batch_size)])
            probs.append(torch.softmax(model(batch.to(device)), dim=1).cpu().numpy())
        window_probs = np.concatenate(probs)
        how = str(inference.aggregation)
        files.append(row.file)
        labels.append(row.label)
        scores.append(aggregate(window_probs[:, :-1], how))
        no_birds.append(aggregate_no_birds(window_probs[:, -1], how))
        counts.append(len(windows))
    species = np.array(scores) if scores else np.zeros((0, len(class_names) - 1))
    return predictions_table(files, labels, class_names, species,
                             float(inference.confidence_threshold), counts,
                             np.array(no_birds))

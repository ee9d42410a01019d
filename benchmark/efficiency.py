"""Cost of the student and of BirdNET, measured in the benchmark's own run."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from models import count_parameters, load_checkpoint

log = logging.getLogger(__name__)


def _ms_per_call(run, repeats: int) -> float:
    run()  # warm-up: first calls allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def measure_efficiency(checkpoint_path: str | Path, windows: int = 20) -> dict:
    """Parameters, file size and ms per 3 s window (batch 1, one thread) of both models."""
    from distillation.teacher import BirdNetTeacher, birdnet_files

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, checkpoint = load_checkpoint(checkpoint_path)
        audio = checkpoint["audio"]
        samples = int(round(audio["sample_rate"] * audio["clip_duration"]))
        wave = torch.randn(1, samples) * 0.1
        with torch.no_grad():
            student_ms = _ms_per_call(lambda: model(wave), windows)
        teacher = BirdNetTeacher(num_threads=1, batch_size=1)
        birdnet_wave = np.random.default_rng(0).normal(0, 0.1, (1, teacher.window_samples))
        birdnet_ms = _ms_per_call(lambda: teacher.logits(birdnet_wave.astype(np.float32)), windows)
        birdnet_model = birdnet_files().model
    finally:
        torch.set_num_threads(threads)
    return {
        "parameters": {"student": count_parameters(model), "birdnet": None},
        "model_file_bytes": {"student": Path(checkpoint_path).stat().st_size,
                             "birdnet": Path(birdnet_model).stat().st_size},
        "ms_per_window": {"student": round(student_ms, 3), "birdnet": round(birdnet_ms, 3)},
        "speed_ratio_birdnet_over_student": round(birdnet_ms / student_ms, 2),
    }

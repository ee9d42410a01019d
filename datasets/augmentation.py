"""Waveform augmentation for training windows (never applied at evaluation).

Spectrogram masking lives in the model (``modules.SpecAugment``) so that it acts on the
model's own features instead of on resynthesised audio.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig


class RandomGain:
    """Random level change: recordings arrive at any level, so level must not identify a class."""

    def __init__(self, max_db: float):
        self.max_db = max_db

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        gain_db = (torch.rand(()) * 2 - 1) * self.max_db
        return wave * (10.0 ** (gain_db / 20.0))


class GaussianNoise:
    """Additive white noise with a standard deviation drawn up to ``level``."""

    def __init__(self, level: float):
        self.level = level

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        return wave + torch.randn_like(wave) * (torch.rand(()) * self.level)


class Compose:
    def __init__(self, steps: list):
        self.steps = steps

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            wave = step(wave)
        return wave


def build_waveform_augment(cfg: DictConfig) -> Compose | None:
    """The waveform part of ``dataset.augmentation`` (time shift is done by the dataset)."""
    if not cfg.enabled:
        return None
    steps: list = []
    if cfg.gain_db and cfg.gain_db > 0:
        steps.append(RandomGain(float(cfg.gain_db)))
    if cfg.noise_level and cfg.noise_level > 0:
        steps.append(GaussianNoise(float(cfg.noise_level)))
    return Compose(steps) if steps else None

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


def mix_at_snr(signal: torch.Tensor, background: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``signal + background`` with the background scaled to ``snr_db`` below the signal."""
    signal_rms = signal.pow(2).mean().sqrt()
    background_rms = background.pow(2).mean().sqrt()
    if background_rms < 1e-8 or signal_rms < 1e-8:
        return signal
    scale = signal_rms / (background_rms * 10.0 ** (snr_db / 20.0))
    return signal + background * scale


def random_snr_db(low: float, high: float) -> float:
    return float(low + torch.rand(()).item() * (high - low))


def permute_batch(batch: dict, order: torch.Tensor) -> dict:
    """Every per-example tensor of ``batch`` reordered by ``order`` (others kept)."""
    size = len(order)
    return {
        k: v[order] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == size else v
        for k, v in batch.items()
    }


def mixup_batch(batch: dict, alpha: float) -> tuple[dict, dict, float]:
    """Mix each example's audio with another's (Zhang et al., mixup).

    Returns (mixed batch, partner batch, lambda). The training loss becomes
    ``lam * loss(logits, batch) + (1 - lam) * loss(logits, partner)``, which for
    cross-entropy equals the loss against the mixed target distribution
    ``lam * y_a + (1 - lam) * y_b``; because every loss here is linear in its target, the
    same rule mixes hard labels and teacher soft labels consistently.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1.0 - lam)  # the first example stays dominant, so its label stays "true"
    order = torch.randperm(batch["audio"].shape[0], device=batch["audio"].device)
    partner = permute_batch(batch, order)
    mixed = dict(batch)
    mixed["audio"] = lam * batch["audio"] + (1.0 - lam) * partner["audio"]
    return mixed, partner, lam

import numpy as np
import torch
import torch.nn.functional as F

from datasets.augmentation import (
    GaussianNoise,
    RandomGain,
    mix_at_snr,
    mixup_batch,
    permute_batch,
)
from datasets.bird_dataset import WindowDataset, WindowExample, resample_around
from modules import SpecAugment

SR = 16000


def _tone(freq: float, seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


def _peak_hz(window: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    return float(np.fft.rfftfreq(len(window), 1 / SR)[np.argmax(spectrum)])


def test_resampling_raises_the_pitch_by_the_speed_and_keeps_the_centre():
    audio = _tone(2000.0)
    assert np.array_equal(resample_around(audio, 1000, 3 * SR, 1.0), audio[1000 : 1000 + 3 * SR])
    for speed in (1.15, 1 / 1.15):
        window = resample_around(audio, 4 * SR, 3 * SR, speed)
        assert len(window) == 3 * SR
        assert abs(_peak_hz(window) - 2000.0 * speed) < 5
    # A click at the window's centre stays at the centre at any speed.
    click = np.zeros(10 * SR, np.float32)
    click[5 * SR + SR // 2] = 1.0
    for speed in (0.87, 1.15):
        window = resample_around(click, 4 * SR, 3 * SR, speed)
        assert abs(int(np.argmax(window)) - 3 * SR // 2) <= 1
    # Past the ends of the recording: silence, not an error.
    assert not resample_around(audio, 0, SR, 1.15)[:10].any()


class _Cache:
    sample_rate = SR

    def __init__(self, audio: dict[str, np.ndarray]):
        self.audio = audio

    def get(self, key: str) -> np.ndarray:
        return self.audio[key]


def test_speed_perturbation_spreads_the_pitch_of_training_windows():
    cache = _Cache({"tone": _tone(2000.0)})
    examples = [WindowExample("tone", 3.0, 0, "tone.wav", "call")] * 40
    torch.manual_seed(0)
    plain = WindowDataset(examples, cache, 3.0)
    perturbed = WindowDataset(examples, cache, 3.0, speed_perturb=0.15)
    assert {_peak_hz(plain[i]["audio"].numpy()) for i in range(5)} == {2000.0}
    peaks = [_peak_hz(perturbed[i]["audio"].numpy()) for i in range(len(examples))]
    assert all(2000.0 / 1.15 - 5 <= p <= 2000.0 * 1.15 + 5 for p in peaks)
    assert min(peaks) < 1900 and max(peaks) > 2100  # both directions are drawn


def test_waveform_augmentations_keep_shape_and_change_audio():
    torch.manual_seed(0)
    wave = torch.randn(96000) * 0.1
    for augment in (RandomGain(6.0), GaussianNoise(0.01)):
        out = augment(wave)
        assert out.shape == wave.shape
        assert not torch.equal(out, wave)


def test_mix_at_snr_hits_the_requested_snr():
    torch.manual_seed(0)
    signal, background = torch.randn(32000), torch.randn(32000) * 5
    mixed = mix_at_snr(signal, background, 10.0)
    added = mixed - signal
    snr = 20 * torch.log10(signal.pow(2).mean().sqrt() / added.pow(2).mean().sqrt())
    assert abs(snr.item() - 10.0) < 1e-3
    assert torch.equal(mix_at_snr(signal, torch.zeros(32000), 10.0), signal)


def test_spec_augment_only_in_training():
    features = torch.randn(2, 64, 301)
    augment = SpecAugment(time_mask_param=30, freq_mask_param=8)
    augment.eval()
    assert torch.equal(augment(features), features)
    augment.train()
    torch.manual_seed(1)
    masked = augment(features)
    assert masked.shape == features.shape and not torch.equal(masked, features)


def test_mixup_mixes_audio_and_labels_consistently():
    torch.manual_seed(0)
    batch = {
        "audio": torch.randn(8, 1000),
        "label": torch.arange(8) % 3,
        "teacher_logits": torch.randn(8, 3),
        "index": torch.arange(8),
    }
    mixed, partner, lam = mixup_batch(batch, alpha=0.4)
    assert 0.5 <= lam <= 1.0
    order = partner["index"]
    assert torch.allclose(mixed["audio"], lam * batch["audio"] + (1 - lam) * batch["audio"][order])
    assert torch.equal(partner["teacher_logits"], batch["teacher_logits"][order])
    # Mixing the two hard-label losses equals cross-entropy against the mixed targets.
    logits = torch.randn(8, 3)
    mixed_loss = lam * F.cross_entropy(logits, batch["label"]) + (1 - lam) * F.cross_entropy(
        logits, partner["label"]
    )
    target = lam * F.one_hot(batch["label"], 3) + (1 - lam) * F.one_hot(partner["label"], 3)
    assert torch.allclose(mixed_loss, F.cross_entropy(logits, target.float()))


def test_permute_batch_leaves_non_tensors():
    batch = {"audio": torch.arange(4), "name": "x"}
    out = permute_batch(batch, torch.tensor([3, 2, 1, 0]))
    assert out["audio"].tolist() == [3, 2, 1, 0] and out["name"] == "x"

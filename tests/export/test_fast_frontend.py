"""The export-time STFT must give the model's own numbers."""

from __future__ import annotations

import pytest
import torch

from export.fast_frontend import FactorizedPowerSpectrogram, choose_factors, with_fast_frontend
from models import build_model
from modules import PowerSpectrogram


def _audio(n: int, samples: int = 96000) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / 32000.0
    return 0.05 * torch.randn(n, samples, generator=generator) + 0.3 * torch.sin(2400 * t)


def test_choose_factors():
    assert choose_factors(1024, 320) == (32, 32)
    n1, n2 = choose_factors(512, 160)
    assert n1 * n2 == 512 and 160 % n2 == 0
    assert choose_factors(768, 640) == (24, 32)  # the default student's front-end
    assert choose_factors(1024, 3) is None  # no hop-compatible factor >= 4


@pytest.mark.parametrize(("n_fft", "hop", "n_bins"),
                         [(1024, 320, 513), (1024, 320, 353), (1024, 320, 1), (768, 640, 265),
                          (768, 640, 385)])
def test_power_spectrogram_matches_torch_stft(n_fft, hop, n_bins):
    reference = PowerSpectrogram(n_fft, hop)
    fast = FactorizedPowerSpectrogram(reference, 96000, n_bins)
    audio = _audio(2)
    expected = reference(audio)[:, :n_bins]
    got = fast(audio)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3 * float(expected.max()) / 1e3)

    # Packed order: every bin appears exactly once, at the row packed_bins says.
    packed = FactorizedPowerSpectrogram(reference, 96000, n_bins, natural_order=False)
    rows = packed(audio)
    bins = packed.packed_bins
    assert sorted(bins[bins >= 0].tolist()) == list(range(n_bins))
    torch.testing.assert_close(rows[:, bins >= 0], expected[:, bins[bins >= 0]],
                               rtol=1e-4, atol=1e-3 * float(expected.max()) / 1e3)


@pytest.mark.parametrize("frontend", ["logmel", "pcen", "loglinear"])
@pytest.mark.parametrize("frontend_kwargs", [{"f_max": 11025.0}, {}])
def test_swapped_model_gives_the_same_logits(frontend, frontend_kwargs):
    model = build_model("dscnn_gru", n_classes=5, frontend=frontend,
                        frontend_kwargs=frontend_kwargs).eval()
    fast = with_fast_frontend(model, 96000)
    assert fast is not None and fast is not model
    audio = _audio(3)
    with torch.no_grad():
        torch.testing.assert_close(fast(audio), model(audio), rtol=0, atol=1e-5)
    # The original model is untouched (the swap works on a copy).
    assert isinstance(model.frontend.spectrogram, PowerSpectrogram)

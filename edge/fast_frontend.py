"""An STFT that onnxruntime runs fast, swapped into a copy of the model at export time.

onnxruntime's ``STFT``/``DFT`` kernels spend ~25 us per 1024-point frame (~6 ms of a 7 ms
clip) and the conv variant of ``PowerSpectrogram`` costs 316 M multiply-adds. This module
computes the same power spectrum as a two-stage Cooley-Tukey factorisation
``n_fft = n1 * n2`` made only of Gather, MatMul and element-wise ops, which onnxruntime runs
with its fast GEMM:

* frames are gathered as whole rows of ``n2`` samples (the hop is a multiple of ``n2``), so
  the windowed frame ``x[n1 * n2 + j]`` is a ``(n1, n2)`` matrix;
* stage 1 is a length-``n1`` DFT over the rows (two MatMuls: real and imaginary parts);
* stage 2 combines the ``n2`` columns with the twiddle factors folded into one matrix per
  ``k1``, and computes only the bins the filterbank uses (11 kHz of 16 kHz at the defaults).

About 35 M multiply-adds per 3 s clip instead of 316 M; same numbers as ``torch.stft`` to
float rounding (the export checks this on every model). The checkpoint and the training code
are untouched: only the exported graph changes.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from modules import MelFilterbank, PowerSpectrogram

log = logging.getLogger(__name__)

# Below this the factorisation saves too little to be worth a different graph.
MIN_FACTOR = 4


def choose_factors(n_fft: int, hop_length: int) -> tuple[int, int] | None:
    """``(n1, n2)`` with ``n1 * n2 == n_fft`` and ``n2`` dividing the hop, as square as
    possible (cost ~ n1 + n2 per sample); None when no useful factorisation exists."""
    best = None
    for n2 in range(MIN_FACTOR, n_fft // MIN_FACTOR + 1):
        if n_fft % n2 or hop_length % n2:
            continue
        n1 = n_fft // n2
        if best is None or abs(n1 - n2) < abs(best[0] - best[1]):
            best = (n1, n2)
    return best


class FactorizedPowerSpectrogram(nn.Module):
    """``|STFT|^2`` of fixed-length clips: ``(B, n_samples) -> (B, n_bins, frames)``.

    Same contract as ``PowerSpectrogram`` (centred frames, reflect padding, periodic Hann)
    but only the first ``n_bins`` frequency bins, for inputs of exactly ``n_samples``.
    """

    def __init__(self, source: PowerSpectrogram, n_samples: int, n_bins: int) -> None:
        super().__init__()
        n_fft, hop = source.n_fft, source.hop_length
        factors = choose_factors(n_fft, hop)
        if factors is None:
            raise ValueError(f"n_fft={n_fft} with hop {hop} has no useful factorisation")
        if not 0 < n_bins <= n_fft // 2 + 1:
            raise ValueError(f"n_bins must be within 1..{n_fft // 2 + 1}, got {n_bins}")
        if n_samples <= n_fft // 2:
            raise ValueError("clips must be longer than half an FFT frame (reflect padding)")
        n1, n2 = factors
        self.n_fft, self.n1, self.n2, self.n_bins = n_fft, n1, n2, n_bins
        self.n_samples = n_samples
        self.n_frames = 1 + n_samples // hop
        padded = n_samples + n_fft
        self.n_rows = -(-padded // n2)
        self.tail = self.n_rows * n2 - padded
        self.k2_count = (n_bins - 1) // n1 + 1

        # Frame t is rows t*step .. t*step+n1-1, laid out (n1, frames, n2) so that stage 1
        # is one big MatMul over the row index.
        step = hop // n2
        rows = torch.arange(n1)[:, None] + step * torch.arange(self.n_frames)[None, :]
        self.register_buffer("frame_rows", rows.reshape(-1).to(torch.int32), persistent=False)
        window = source.window.to(torch.float64).reshape(n1, n2)
        self.register_buffer("window", window[:, None, :].float(), persistent=False)

        # Stage 1: the length-n1 DFT of every column, real and imaginary parts as two
        # MatMuls (no gather of rows afterwards; conjugate symmetry is not used because the
        # gathers it needs cost onnxruntime more than the multiply-adds it saves).
        t1 = torch.arange(n1, dtype=torch.float64)
        phase = 2.0 * math.pi * t1[:, None] * t1[None, :] / n1
        self.register_buffer("dft_re", torch.cos(phase).float(), persistent=False)
        self.register_buffer("dft_im", (-torch.sin(phase)).float(), persistent=False)

        # Stage 2, per k1: X[k1 + n1*k2] = sum_j Y[k1, j] * exp(-2i*pi*j*(k1 + n1*k2)/n_fft)
        # = sum_j (a*cos + b*sin) + i*(b*cos - a*sin), with a = Re Y[k1, j], b = Im Y[k1, j].
        j = torch.arange(n2, dtype=torch.float64)[:, None]
        k2 = torch.arange(self.k2_count, dtype=torch.float64)[None, :]
        theta = torch.stack([2.0 * math.pi * j * (k + n1 * k2) / n_fft for k in range(n1)])
        self.register_buffer("cos", torch.cos(theta).float(), persistent=False)  # (n1, n2, k2)
        self.register_buffer("sin", torch.sin(theta).float(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        batch = waveform.shape[0]
        half = self.n_fft // 2
        padded = F.pad(waveform.unsqueeze(1), (half, half), mode="reflect").squeeze(1)
        if self.tail:
            padded = F.pad(padded, (0, self.tail))
        rows = padded.reshape(batch, self.n_rows, self.n2)
        frames = torch.index_select(rows, 1, self.frame_rows)
        # A full-size window, because a same-shape Mul is much faster than a broadcasting one.
        # Expanding over the (dynamic) batch too keeps the exporter from folding the Expand
        # into a stored constant, which at ~150 frames would double the model file.
        window = self.window.unsqueeze(0).expand(batch, self.n1, self.n_frames, self.n2)
        frames = (frames.reshape(batch, self.n1, self.n_frames, self.n2) * window).reshape(
            batch, self.n1, self.n_frames * self.n2
        )
        shape = (batch, self.n1, self.n_frames, self.n2)
        real = torch.matmul(self.dft_re, frames).reshape(shape)  # (B, k1, frames, n2)
        imag = torch.matmul(self.dft_im, frames).reshape(shape)
        out_re = torch.matmul(real, self.cos) + torch.matmul(imag, self.sin)
        out_im = torch.matmul(imag, self.cos) - torch.matmul(real, self.sin)
        power = out_re * out_re + out_im * out_im  # (B, n1 [k1], frames, k2)
        # Natural bin order k = k1 + n1 * k2: (B, k2, k1, frames) flattened.
        power = power.permute(0, 3, 1, 2).reshape(batch, -1, self.n_frames)
        return power[:, : self.n_bins]


class TrimmedFilterbank(nn.Module):
    """A fixed filterbank restricted to the bins it uses: ``(B, n_bins, T) -> (B, M, T)``."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix.detach().clone(), persistent=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.matrix, power)


def used_bins(matrix: torch.Tensor) -> int:
    """1 + the highest frequency bin with a non-zero filter weight."""
    nonzero = torch.nonzero(matrix.abs().sum(dim=0) > 0).flatten()
    return int(nonzero.max()) + 1 if len(nonzero) else matrix.shape[1]


def with_fast_frontend(model: nn.Module, n_samples: int) -> nn.Module | None:
    """A copy of ``model`` whose STFT is factorised, or None when the model has no
    ``frontend.spectrogram`` of the usual kind (the export then keeps the model as it is)."""
    frontend = getattr(model, "frontend", None)
    spectrogram = getattr(frontend, "spectrogram", None)
    if not isinstance(spectrogram, PowerSpectrogram):
        return None
    if choose_factors(spectrogram.n_fft, spectrogram.hop_length) is None:
        return None
    fast = copy.deepcopy(model).eval()
    n_bins = spectrogram.n_freqs
    filterbank = getattr(frontend, "filterbank", None)
    if isinstance(filterbank, MelFilterbank):
        # Bins above f_max have no weight: computing them would be wasted work.
        n_bins = used_bins(filterbank.matrix)
        fast.frontend.filterbank = TrimmedFilterbank(filterbank.matrix[:, :n_bins])
    fast.frontend.spectrogram = FactorizedPowerSpectrogram(spectrogram, n_samples, n_bins)
    log.debug("factorised STFT: %d bins of %d", n_bins, spectrogram.n_freqs)
    return fast

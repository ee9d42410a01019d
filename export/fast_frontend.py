"""An STFT that onnxruntime runs fast, swapped into a copy of the model at export time.

onnxruntime's ``STFT``/``DFT`` kernels spend ~25 us per 1024-point frame (~6 ms of a 7 ms
clip) and the conv variant of ``PowerSpectrogram`` costs hundreds of millions of
multiply-adds. This module computes the same power spectrum as a two-stage Cooley-Tukey
factorisation ``n_fft = n1 * n2`` made only of Gather, MatMul and element-wise ops, which
onnxruntime runs with its fast GEMM:

* frames are gathered as whole rows of ``n2`` samples (the hop is a multiple of ``n2``), so
  the windowed frame ``x[n1 * n2 + j]`` is a ``(n1, n2)`` matrix;
* stage 1 is a length-``n1`` DFT over the rows; the input is real, so only rows
  ``0 .. n1/2`` are computed (the others are their conjugates);
* stage 2 combines the ``n2`` columns with the twiddle factors folded into one matrix pair
  per stage-1 row, which yields the bins of that row and of its mirror, and only the bins the
  filterbank uses (11 kHz of 16 kHz at the defaults);
* a mel filterbank that follows takes the bins in the order stage 2 leaves them (its matrix
  is reordered instead), so no reordering pass runs.

At the default 768-point FFT every 20 ms this is ~9 M multiply-adds per 3 s clip; same
numbers as ``torch.stft`` to float rounding (the export checks this on every model). The
checkpoint and the training code are untouched: only the exported graph changes.
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
    """``|STFT|^2`` of fixed-length clips: ``(B, n_samples) -> (B, rows, frames)``.

    Same contract as ``PowerSpectrogram`` (centred frames, reflect padding, periodic Hann)
    for inputs of exactly ``n_samples``. With ``natural_order=True`` the rows are bins
    ``0 .. n_bins - 1``. With ``natural_order=False`` they come in the order the
    factorisation produces them, ``packed_bins[row]`` tells which bin each row is (-1: a row
    to ignore, padding or a bin at or above ``n_bins``): a filterbank that follows can absorb
    that order into its matrix and spare the graph a reordering pass.
    """

    def __init__(self, source: PowerSpectrogram, n_samples: int, n_bins: int,
                 natural_order: bool = True) -> None:
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
        k2_count = (n_bins - 1) // n1 + 1
        self.natural_order = natural_order

        # Frame t is rows t*step .. t*step+n1-1, laid out (n1, frames, n2) so that stage 1
        # is one big MatMul over the row index.
        step = hop // n2
        rows = torch.arange(n1)[:, None] + step * torch.arange(self.n_frames)[None, :]
        self.register_buffer("frame_rows", rows.reshape(-1).to(torch.int32), persistent=False)
        window = source.window.to(torch.float64).reshape(n1, n2)
        self.register_buffer("window", window[:, None, :].float(), persistent=False)

        # Stage 1: the length-n1 DFT of every column. The input is real, so row n1 - r of
        # the result is the conjugate of row r: only rows r = 0 .. n1/2 are computed.
        half_rows = n1 // 2 + 1
        r = torch.arange(half_rows, dtype=torch.float64)[:, None]
        t1 = torch.arange(n1, dtype=torch.float64)[None, :]
        phase = 2.0 * math.pi * r * t1 / n1
        self.register_buffer("dft_re", torch.cos(phase).float(), persistent=False)
        self.register_buffer("dft_im", (-torch.sin(phase)).float(), persistent=False)

        # Stage 2: X[k1 + n1*k2] = sum_j Y[k1, j] * exp(-2i*pi*j*(k1 + n1*k2)/n_fft). Row r
        # (Y = a + ib) yields the bins of k1 = r directly and, through conj(Y), those of
        # k1 = n1 - r: out = a @ A[r] + b @ B[r] gives, per row,
        # [Re X(k1=r) | Re X(k1=n1-r) | Im X(k1=r) | Im X(k1=n1-r)] (see stage2_matrices).
        j = torch.arange(n2, dtype=torch.float64)[:, None]
        k2 = torch.arange(k2_count, dtype=torch.float64)[None, :]
        theta = torch.stack([2.0 * math.pi * j * (k + n1 * k2) / n_fft for k in range(n1)])
        self.register_buffer("cos", torch.cos(theta).float(), persistent=False)  # (n1, n2, k2)
        self.register_buffer("sin", torch.sin(theta).float(), persistent=False)
        direct = torch.arange(half_rows)
        # Rows 0 and n1/2 are their own mirror: their second half is zero padding.
        has_mirror = (direct > 0) & (direct < n1 - direct)
        mirror = torch.where(has_mirror, n1 - direct, direct)
        self.register_buffer("direct_rows", direct, persistent=False)
        self.register_buffer("mirror_rows", mirror, persistent=False)
        self.register_buffer("mirror_keep", has_mirror.float()[:, None, None], persistent=False)

        # Which bin each packed output row holds (-1: padding or above n_bins).
        offsets = n1 * torch.arange(k2_count)
        packed = torch.cat([
            torch.cat([row + offsets, (n1 - row + offsets) if has_mirror[row]
                       else torch.full_like(offsets, -1)])
            for row in range(half_rows)
        ])
        packed[packed >= n_bins] = -1
        self.register_buffer("packed_bins", packed, persistent=False)
        self.n_packed = len(packed)
        # Natural order: which packed row holds bin k (every bin < n_bins is somewhere).
        order = torch.empty(n_bins, dtype=torch.int64)
        valid = packed >= 0
        order[packed[valid]] = torch.nonzero(valid).flatten()
        self.register_buffer("natural_rows", order.to(torch.int32), persistent=False)

    def stage2_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)``, each ``(n1/2 + 1, n2, 4 * k2)``. Built in the graph from the
        ``(n1, n2, k2)`` twiddle tables rather than stored: the exporter leaves a subgraph
        with inputs this large alone and onnxruntime folds it once when the model loads,
        so the file holds the smaller tables and inference pays nothing."""
        cos = torch.index_select(self.cos, 0, self.direct_rows)
        sin = torch.index_select(self.sin, 0, self.direct_rows)
        cos_m = torch.index_select(self.cos, 0, self.mirror_rows) * self.mirror_keep
        sin_m = torch.index_select(self.sin, 0, self.mirror_rows) * self.mirror_keep
        a = torch.cat([cos, cos_m, -sin, -sin_m], dim=2)
        b = torch.cat([sin, -sin_m, cos, -cos_m], dim=2)
        return a, b

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
        shape = (batch, self.dft_re.shape[0], self.n_frames, self.n2)
        real = torch.matmul(self.dft_re, frames).reshape(shape)  # (B, rows, frames, n2)
        imag = torch.matmul(self.dft_im, frames).reshape(shape)
        stage2_a, stage2_b = self.stage2_matrices()
        out = torch.matmul(real, stage2_a) + torch.matmul(imag, stage2_b)
        out = out * out
        columns = out.shape[-1] // 2
        power = out[..., :columns] + out[..., columns:]  # (B, rows, frames, 2 * k2)
        power = power.transpose(2, 3).reshape(batch, self.n_packed, self.n_frames)
        if self.natural_order:
            power = torch.index_select(power, 1, self.natural_rows)
        return power


class TrimmedFilterbank(nn.Module):
    """A fixed filterbank over the rows a spectrogram delivers: ``(B, rows, T) -> (B, M, T)``.

    ``columns[row]`` is the bin of ``matrix`` that row holds, -1 for a padding row (zero
    weight). The reordered matrix is built in the graph, like ``stage2_matrices`` above, so
    the file stores the filterbank once.
    """

    def __init__(self, matrix: torch.Tensor, columns: torch.Tensor) -> None:
        super().__init__()
        n_bins = matrix.shape[1]
        columns = torch.where(columns < 0, n_bins, columns)  # the appended zero column
        self.register_buffer("matrix", matrix.detach().clone(), persistent=False)
        self.register_buffer("columns", columns.to(torch.int64), persistent=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        matrix = torch.index_select(F.pad(self.matrix, (0, 1)), 1, self.columns)
        return torch.matmul(matrix, power)


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
        # Bins above f_max have no weight: computing them would be wasted work. The
        # filterbank takes the spectrogram's rows in their packed order (padding rows get
        # zero weight), so the graph never reorders them.
        n_bins = used_bins(filterbank.matrix)
        packed = FactorizedPowerSpectrogram(spectrogram, n_samples, n_bins, natural_order=False)
        fast.frontend.filterbank = TrimmedFilterbank(filterbank.matrix[:, :n_bins],
                                                     packed.packed_bins)
        fast.frontend.spectrogram = packed
    else:
        fast.frontend.spectrogram = FactorizedPowerSpectrogram(spectrogram, n_samples, n_bins)
    log.debug("factorised STFT: %d bins of %d", n_bins, spectrogram.n_freqs)
    return fast

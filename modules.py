"""Building blocks of the student models: audio front-ends, augmentation, conv and pooling blocks.

Everything here is an ``nn.Module`` that maps tensors to tensors and exports to ONNX, because
the trained model is exported whole (front-end included) to run on edge devices: the device
then feeds raw audio and never has to re-implement the feature extraction.

Shape conventions:
* waveforms are ``(batch, samples)`` float32;
* features and conv activations are ``(batch, channels_or_bins, frames)``;
* recurrent outputs and time-pooling inputs are ``(batch, frames, dim)`` (``batch_first``).
"""

from __future__ import annotations

import logging
import math

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Spectrogram and filterbanks
# ---------------------------------------------------------------------------------------------

STFT_METHODS: tuple[str, ...] = ("stft", "conv")


class PowerSpectrogram(nn.Module):
    """``|STFT|^2`` of a waveform: ``(B, N) -> (B, n_fft // 2 + 1, 1 + N // hop_length)``.

    Matches ``librosa.stft(center=True, pad_mode="reflect", window="hann")`` (periodic Hann).

    Two interchangeable implementations, same numbers (to float rounding):
    * ``"stft"`` (default): ``torch.stft``; an FFT, about 6x faster than ``"conv"`` in PyTorch
      on CPU, and exported by the dynamo ONNX exporter as the ONNX ``STFT`` op (opset >= 17).
    * ``"conv"``: a strided ``conv1d`` against a fixed windowed-DFT kernel. Costs
      ``n_freqs * 2 * n_fft`` MACs per frame (~316 M per 3 s clip at the defaults), but uses
      only ``Pad`` + ``Conv`` so it runs on any runtime or converter that lacks the ``STFT`` op,
      and it exports with the legacy TorchScript exporter too (which rejects complex tensors).
    The DFT kernel is derived from the window, so it is a non-persistent buffer: switching
    methods never changes the state dict.
    """

    def __init__(self, n_fft: int = 1024, hop_length: int = 320, method: str = "stft") -> None:
        super().__init__()
        if method not in STFT_METHODS:
            raise ValueError(f"unknown STFT method {method!r}; valid: {', '.join(STFT_METHODS)}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.method = method
        self.n_freqs = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))
        if method == "conv":
            self.register_buffer("dft_kernel", self._dft_kernel(self.window), persistent=False)

    def _dft_kernel(self, window: torch.Tensor) -> torch.Tensor:
        """(2 * n_freqs, 1, n_fft): windowed cosines then windowed negative sines."""
        k = torch.arange(self.n_freqs, dtype=torch.float64)[:, None]
        t = torch.arange(self.n_fft, dtype=torch.float64)[None, :]
        phase = 2.0 * math.pi * k * t / self.n_fft
        w = window.to(torch.float64)[None, :]
        kernel = torch.cat([torch.cos(phase) * w, -torch.sin(phase) * w], dim=0)
        return kernel.to(torch.float32).unsqueeze(1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.method == "stft":
            spec = torch.stft(
                waveform,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )
            # Real/imag parts instead of abs(): avoids a sqrt that is squared straight away.
            return spec.real.square() + spec.imag.square()
        half = self.n_fft // 2
        padded = F.pad(waveform.unsqueeze(1), (half, half), mode="reflect")
        parts = F.conv1d(padded, self.dft_kernel, stride=self.hop_length)
        real, imag = parts[:, : self.n_freqs], parts[:, self.n_freqs :]
        return real.square() + imag.square()


class MelFilterbank(nn.Module):
    """Fixed librosa mel matrix (Slaney scale and area normalisation): ``(B, F, T) -> (B, M, T)``.

    The matrix is a persistent buffer, so a checkpoint keeps the exact filterbank it was trained
    with even if a later librosa changes its defaults.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        n_mels: int = 64,
        f_min: float = 50.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        matrix = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max
        )
        self.register_buffer("matrix", torch.from_numpy(matrix.astype(np.float32)))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.matrix, power)


class LogCompression(nn.Module):
    """``log(x + offset)``; the offset sets the floor for silent bins and keeps log finite."""

    def __init__(self, offset: float = 1e-6) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x + self.offset)


class LogMelFrontend(nn.Module):
    """Raw audio -> log mel power spectrogram ``(B, n_mels, frames)``.

    Equals ``log(librosa.feature.melspectrogram(power=2, center=True, pad_mode="reflect") +
    log_offset)`` with librosa's default (Slaney) mel filters.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_mels: int = 64,
        f_min: float = 50.0,
        f_max: float | None = None,
        log_offset: float = 1e-6,
        stft_method: str = "stft",
    ) -> None:
        super().__init__()
        self.n_bins = n_mels
        self.spectrogram = PowerSpectrogram(n_fft, hop_length, method=stft_method)
        self.filterbank = MelFilterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        self.compress = LogCompression(log_offset)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.compress(self.filterbank(self.spectrogram(waveform)))


class LearnableWarpedFilterbank(nn.Module):
    """Triangular filters evenly spaced on ``w(f) = log(1 + f / f_break)``, ``f_break`` learnt.

    ``f_break`` is where the scale bends from linear to logarithmic: far below it filters are
    evenly spaced in Hz, far above it evenly spaced in log-Hz. Mel (HTK) is ``f_break = 700``;
    bird calls are mostly high-pitched, so letting training move the breakpoint lets the model
    decide how much resolution the low band deserves. ``log(f_break)`` is the parameter so
    ``f_break`` stays positive and its steps are relative.

    The weights are rebuilt from the FFT bin frequencies on every forward pass (a cheap
    ``n_filters x n_freqs`` job), which is what makes ``f_break`` differentiable. Triangles are
    drawn in Hz with Slaney-style area normalisation, so at ``f_break = 700`` this is exactly
    ``librosa.filters.mel(htk=True)``. Each half-width is at least one FFT bin, so a strongly
    log-like scale cannot create empty (all-zero) low filters.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        n_filters: int = 64,
        f_min: float = 50.0,
        f_max: float | None = None,
        init_break_hz: float = 700.0,
    ) -> None:
        super().__init__()
        f_max = sample_rate / 2.0 if f_max is None else float(f_max)
        if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}")
        if init_break_hz <= 0:
            raise ValueError(f"init_break_hz must be positive, got {init_break_hz}")
        self.n_filters = n_filters
        self.f_min = float(f_min)
        self.f_max = f_max
        self.bin_width_hz = sample_rate / n_fft
        self.log_f_break = nn.Parameter(torch.tensor(math.log(init_break_hz)))
        freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
        self.register_buffer("fft_freqs", freqs, persistent=False)

    @property
    def f_break(self) -> torch.Tensor:
        return self.log_f_break.exp()

    def edge_frequencies(self) -> torch.Tensor:
        """``n_filters + 2`` frequencies (Hz): filter ``i`` spans edges ``i .. i + 2``."""
        f_break = self.f_break
        w_lo = torch.log1p(self.f_min / f_break)
        w_hi = torch.log1p(self.f_max / f_break)
        steps = torch.linspace(0.0, 1.0, self.n_filters + 2, device=f_break.device)
        # exp() - 1 rather than expm1(): the legacy ONNX exporter has no expm1, and w >= w_lo
        # is never tiny enough at audio frequencies for the cancellation to matter.
        return f_break * (torch.exp(w_lo + (w_hi - w_lo) * steps) - 1.0)

    def center_frequencies(self) -> torch.Tensor:
        return self.edge_frequencies()[1:-1]

    def weights(self) -> torch.Tensor:
        """(n_filters, n_freqs) triangular weights, differentiable w.r.t. ``log_f_break``."""
        edges = self.edge_frequencies()
        lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
        rise = (center - lower).clamp(min=self.bin_width_hz)
        fall = (upper - center).clamp(min=self.bin_width_hz)
        f = self.fft_freqs[None, :]
        tri = torch.minimum((f - center + rise) / rise, (center + fall - f) / fall).clamp(min=0.0)
        return tri * (2.0 / (rise + fall))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weights(), power)


class LogLinearFilterbankFrontend(nn.Module):
    """Raw audio -> log energies of a learnable log/linear filterbank ``(B, n_filters, frames)``.

    Its only parameter is the breakpoint ``filterbank.log_f_break``; reach it through
    ``frontend.parameters()`` to give it its own learning rate.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_filters: int = 64,
        f_min: float = 50.0,
        f_max: float | None = None,
        init_break_hz: float = 700.0,
        log_offset: float = 1e-6,
        stft_method: str = "stft",
    ) -> None:
        super().__init__()
        self.n_bins = n_filters
        self.spectrogram = PowerSpectrogram(n_fft, hop_length, method=stft_method)
        self.filterbank = LearnableWarpedFilterbank(
            sample_rate, n_fft, n_filters, f_min, f_max, init_break_hz
        )
        self.compress = LogCompression(log_offset)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.compress(self.filterbank(self.spectrogram(waveform)))


class ExponentialSmoother(nn.Module):
    """First-order IIR ``M[t] = (1 - s) M[t-1] + s E[t]``, truncated and vectorised.

    The IIR impulse response ``s (1 - s)^k`` is truncated where it has decayed below
    ``tolerance`` (``length`` taps) and renormalised to sum to 1, so a constant input gives the
    same constant out. The state before the first frame is the first frame itself (edge
    padding), like librosa's PCEN, so the clip start is not a fake onset.

    WHY not a loop or a convolution: a Python loop over frames unrolls into hundreds of ONNX
    nodes (and ``Scan``/``Loop`` are poorly supported by edge runtimes), and the equivalent
    depthwise convolution costs ``length`` (~270) multiply-adds per output, which made the
    PCEN front-end cost more than the rest of the student. Instead the filter is built by
    doubling: ``y_{j+1}[t] = y_j[t] + (1 - s)^(2^j) y_j[t - 2^j]`` covers twice the taps of
    ``y_j``, and the blocks named by the binary digits of ``length`` are summed at their
    offsets. That is ~2 log2(length) shifted multiply-adds per output (Pad, Slice, Mul, Add
    in ONNX), and exactly the same truncated filter as the convolution.
    """

    def __init__(self, smooth_coef: float = 0.025, tolerance: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 < smooth_coef <= 1.0:
            raise ValueError(f"smooth_coef must be in (0, 1], got {smooth_coef}")
        length = 1 if smooth_coef == 1.0 else math.log(tolerance) / math.log(1.0 - smooth_coef)
        self.length = max(1, math.ceil(length))
        # One filter for every channel, so the module needs no channel count and no weights.
        self.decay = 1.0 - smooth_coef
        # Renormalise the truncated response so its taps sum to 1.
        self.scale = smooth_coef / (1.0 - self.decay**self.length) if self.decay > 0 else 1.0

    @staticmethod
    def _delay(x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x[t - frames]``, with the first frame standing in before the clip start."""
        return F.pad(x, (frames, 0), mode="replicate")[..., : -frames or None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decay = self.decay
        block = x * self.scale  # y_0: one tap
        span = 1  # taps in ``block``
        total: torch.Tensor | None = None
        offset = 0  # taps already in ``total``
        remaining = self.length
        while remaining:
            if remaining & 1:
                part = block if offset == 0 else decay**offset * self._delay(block, offset)
                total = part if total is None else total + part
                offset += span
            remaining >>= 1
            if remaining:
                block = block + decay**span * self._delay(block, span)
                span *= 2
        return total


class PCEN(nn.Module):
    """Per-channel energy normalisation (Wang et al., 2017) with learnable per-channel params.

    ``(E / (eps + M)^alpha + delta)^r - delta^r`` where ``M`` is the smoothed energy. It
    replaces the log: it adapts to the background level in each band, which suppresses
    stationary noise (wind, insects, streams) that a log-mel keeps. ``alpha``, ``delta`` and
    ``r`` are stored as logs so they stay positive; ``alpha`` and ``r`` are capped at 1 where
    the formula stops making sense.
    """

    def __init__(
        self,
        n_channels: int,
        smooth_coef: float = 0.025,
        alpha: float = 0.98,
        delta: float = 2.0,
        r: float = 0.5,
        eps: float = 1e-6,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.smoother = ExponentialSmoother(smooth_coef)

        def log_param(value: float) -> nn.Parameter:
            init = torch.full((n_channels, 1), math.log(value))
            return nn.Parameter(init, requires_grad=trainable)

        self.log_alpha = log_param(alpha)
        self.log_delta = log_param(delta)
        self.log_r = log_param(r)

    def forward(self, energy: torch.Tensor) -> torch.Tensor:
        alpha = self.log_alpha.exp().clamp(max=1.0)
        delta = self.log_delta.exp()
        r = self.log_r.exp().clamp(max=1.0)
        smooth = self.smoother(energy)
        # exp(-alpha * log(eps + M)) == (eps + M)^-alpha, without a pow of a tensor exponent.
        gain = torch.exp(-alpha * torch.log(self.eps + smooth))
        return (energy * gain + delta).pow(r) - delta.pow(r)


class PCENFrontend(nn.Module):
    """Raw audio -> PCEN-normalised mel energies ``(B, n_mels, frames)``."""

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop_length: int = 320,
        n_mels: int = 64,
        f_min: float = 50.0,
        f_max: float | None = None,
        smooth_coef: float = 0.025,
        alpha: float = 0.98,
        delta: float = 2.0,
        r: float = 0.5,
        eps: float = 1e-6,
        trainable: bool = True,
        stft_method: str = "stft",
    ) -> None:
        super().__init__()
        self.n_bins = n_mels
        self.spectrogram = PowerSpectrogram(n_fft, hop_length, method=stft_method)
        self.filterbank = MelFilterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        self.pcen = PCEN(n_mels, smooth_coef, alpha, delta, r, eps, trainable)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.pcen(self.filterbank(self.spectrogram(waveform)))


FRONTENDS: dict[str, type[nn.Module]] = {
    "logmel": LogMelFrontend,
    "loglinear": LogLinearFilterbankFrontend,
    "pcen": PCENFrontend,
}
# The keyword that sets the number of output bins in each front-end's constructor.
_N_BINS_KWARG: dict[str, str] = {"logmel": "n_mels", "loglinear": "n_filters", "pcen": "n_mels"}


def build_frontend(name: str, sample_rate: int, **kwargs: object) -> nn.Module:
    """Front-end by name. ``n_bins=`` is accepted as a name-independent alias for the number of
    output bins (``n_mels`` / ``n_filters``), so models need not know each constructor."""
    if name not in FRONTENDS:
        raise ValueError(f"unknown front-end {name!r}; valid names: {', '.join(FRONTENDS)}")
    if "n_bins" in kwargs:
        kwargs[_N_BINS_KWARG[name]] = kwargs.pop("n_bins")
    return FRONTENDS[name](sample_rate=sample_rate, **kwargs)


class InstanceStandardize(nn.Module):
    """Standardise each example's features over all bins and frames.

    A recording made 20 dB quieter only shifts log features by a constant, so subtracting the
    per-example mean makes the model blind to the recorder's gain; dividing by the std does
    the same for PCEN's per-recording scale.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = _mean_over_features(x)
        var = _mean_over_features((x - mean).square())
        return (x - mean) * torch.rsqrt(var + self.eps)


def _mean_over_features(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the batch, one axis at a time (same value: equal counts).

    onnxruntime sums a multi-axis ReduceMean in one long float32 run; over ~10k log-mel
    values near -14 its rounding reached 4e-4 after standardising a near-silent clip, four
    times the export's parity budget. Summing per axis keeps every run short.
    """
    for dim in range(x.dim() - 1, 0, -1):
        x = x.mean(dim=dim, keepdim=True)
    return x


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


class SpecAugment(nn.Module):
    """Time and frequency masking of features ``(B, F, T)``, drawn per example, train mode only.

    Each mask has a width drawn uniformly from ``[0, param]`` and a uniform start. Masked cells
    take the example's mean feature value rather than 0, because log features are far from
    zero-centred and a block of zeros would be a loud artefact. Holds no parameters or buffers,
    so it can replace ``model.feature_augment`` without touching the state dict.
    """

    def __init__(
        self,
        time_mask_param: int = 0,
        freq_mask_param: int = 0,
        n_time_masks: int = 2,
        n_freq_masks: int = 2,
    ) -> None:
        super().__init__()
        if min(time_mask_param, freq_mask_param, n_time_masks, n_freq_masks) < 0:
            raise ValueError("SpecAugment parameters must be >= 0")
        self.time_mask_param = time_mask_param
        self.freq_mask_param = freq_mask_param
        self.n_time_masks = n_time_masks
        self.n_freq_masks = n_freq_masks

    @staticmethod
    def _band_mask(
        batch: int, size: int, max_width: int, n_masks: int, device: torch.device
    ) -> torch.Tensor:
        """(batch, size) bool: union of ``n_masks`` random bands per example."""
        max_width = min(max_width, size)
        width = torch.randint(0, max_width + 1, (batch, n_masks, 1), device=device)
        start = (torch.rand(batch, n_masks, 1, device=device) * (size - width + 1)).long()
        pos = torch.arange(size, device=device).view(1, 1, size)
        return ((pos >= start) & (pos < start + width)).any(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        do_time = self.time_mask_param > 0 and self.n_time_masks > 0
        do_freq = self.freq_mask_param > 0 and self.n_freq_masks > 0
        if not (do_time or do_freq):
            return x
        batch, n_bins, n_frames = x.shape
        mask = torch.zeros(batch, n_bins, n_frames, dtype=torch.bool, device=x.device)
        if do_freq:
            bands = self._band_mask(
                batch, n_bins, self.freq_mask_param, self.n_freq_masks, x.device
            )
            mask = mask | bands[:, :, None]
        if do_time:
            bands = self._band_mask(
                batch, n_frames, self.time_mask_param, self.n_time_masks, x.device
            )
            mask = mask | bands[:, None, :]
        fill = x.detach().mean(dim=(1, 2), keepdim=True)
        return torch.where(mask, fill, x)

    def extra_repr(self) -> str:
        return (
            f"time_mask_param={self.time_mask_param}, freq_mask_param={self.freq_mask_param}, "
            f"n_time_masks={self.n_time_masks}, n_freq_masks={self.n_freq_masks}"
        )


# ---------------------------------------------------------------------------------------------
# Convolutional blocks
# ---------------------------------------------------------------------------------------------

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


def build_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SqueezeExcite1d(nn.Module):
    """Channel gating from a summary over time: ``(B, C, T) -> (B, C, T)``.

    ``causal=False`` summarises the whole clip (classic SE). ``causal=True`` uses the running
    mean of frames ``0..t`` for frame ``t`` (a cumulative sum), so a block stays streamable:
    no output depends on a future frame.
    """

    def __init__(self, channels: int, reduction: int = 4, causal: bool = False) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.causal = causal
        self.reduce = nn.Conv1d(channels, hidden, kernel_size=1)
        self.expand = nn.Conv1d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            count = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
            summary = torch.cumsum(x, dim=-1) / count
        else:
            summary = x.mean(dim=-1, keepdim=True)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(summary))))
        return x * gate


class DepthwiseSeparableConv1d(nn.Module):
    """MatchboxNet/PhiNet-style residual block over time: ``(B, in_ch, T) -> (B, out_ch, T')``.

    depthwise conv -> BN -> activation -> pointwise conv -> BN -> SE -> dropout, plus a
    residual. ``T' = ceil(T / stride)``. With ``causal=True`` all padding is on the left and the
    SE summary is a running mean, so output frame ``j`` depends only on input frames
    ``<= j * stride``; the residual is subsampled at those same frames (strided slicing or a
    strided 1x1 projection, not average pooling, which would look ahead). BatchNorm keeps
    PyTorch's momentum convention (0.1 = weight of the new batch).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = True,
        se: bool = True,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        span = dilation * (kernel_size - 1)
        if not causal and span % 2:
            raise ValueError("a non-causal block needs an odd kernel span to pad symmetrically")
        self.padding = (span, 0) if causal else (span // 2, span // 2)
        self.stride = stride
        self.depthwise = nn.Conv1d(
            in_ch, in_ch, kernel_size, stride=stride, dilation=dilation, groups=in_ch, bias=False
        )
        self.bn1 = nn.BatchNorm1d(in_ch)
        self.act = build_activation(activation)
        self.pointwise = nn.Conv1d(in_ch, out_ch, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.se = SqueezeExcite1d(out_ch, causal=causal) if se else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        if in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv1d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm1d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.depthwise(F.pad(x, self.padding))))
        y = self.dropout(self.se(self.bn2(self.pointwise(y))))
        residual = self.shortcut(x)
        if isinstance(self.shortcut, nn.Identity) and self.stride > 1:
            residual = residual[:, :, :: self.stride]
        return y + residual


# ---------------------------------------------------------------------------------------------
# Pooling over time
# ---------------------------------------------------------------------------------------------


class AttentionPooling(nn.Module):
    """Softmax attention over frames: ``(B, T, D) -> (B, D)``, a weighted mean of frames.

    Lets the model look at the few frames holding a call instead of averaging them with
    silence. ``hidden > 0`` scores frames with a small tanh MLP, ``hidden = 0`` with a linear map.
    """

    def __init__(self, in_dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.out_dim = in_dim
        if hidden > 0:
            self.score: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1)
            )
        else:
            self.score = nn.Linear(in_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(x), dim=1)  # (B, T, 1)
        return (weights * x).sum(dim=1)


class MaxPooling(nn.Module):
    """Max over frames: ``(B, T, D) -> (B, D)``."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=1)


class LinearSoftmaxPooling(nn.Module):
    """Multiple-instance pooling of frame probabilities: ``(B, T, D) -> (B, n_classes)`` LOGITS.

    A linear layer gives per-frame class probabilities ``p_t = sigmoid(z_t)``; the clip
    probability is ``sum_t p_t^2 / sum_t p_t``, a mean of frames weighted by their own
    confidence, so a call in a few frames is neither lost (mean) nor driven by one noisy frame
    (max). The clip probability is returned as a logit, ``log(p / (1 - p))``, so every model
    ends in logits whichever pooling it uses.
    """

    def __init__(self, in_dim: int, n_classes: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.frame_classifier = nn.Linear(in_dim, n_classes)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frame_prob = torch.sigmoid(self.frame_classifier(x))
        clip_prob = frame_prob.square().sum(dim=1) / (frame_prob.sum(dim=1) + self.eps)
        clip_prob = clip_prob.clamp(self.eps, 1.0 - self.eps)
        return torch.log(clip_prob) - torch.log1p(-clip_prob)


TIME_POOLINGS: tuple[str, ...] = ("attention", "linear_softmax", "max")


def build_time_pooling(
    name: str, in_dim: int, n_classes: int, dropout: float = 0.0, attention_hidden: int = 0
) -> nn.Module:
    """A time-pooling classifier head: frames ``(B, T, in_dim)`` -> clip logits ``(B, n_classes)``.

    Every variant includes its own linear classifier so models can swap poolings freely:
    ``attention`` and ``max`` pool a vector, then dropout and a linear layer;
    ``linear_softmax`` classifies frames (after dropout) and pools their probabilities.
    """
    if name == "attention":
        pool: nn.Module = AttentionPooling(in_dim, attention_hidden)
    elif name == "max":
        pool = MaxPooling(in_dim)
    elif name == "linear_softmax":
        return nn.Sequential(nn.Dropout(dropout), LinearSoftmaxPooling(in_dim, n_classes))
    else:
        raise ValueError(f"unknown time pooling {name!r}; valid names: {', '.join(TIME_POOLINGS)}")
    return nn.Sequential(pool, nn.Dropout(dropout), nn.Linear(in_dim, n_classes))


class ConvBlock2d(nn.Module):
    """conv3x3 -> BN -> ReLU -> max-pool on ``(B, C, F, T)``; the workhorse of the 2-D baselines.

    ``pool`` is ``(freq, time)``; a 1 leaves that axis alone, which is how the CRNN keeps its
    time resolution while it shrinks frequency.
    """

    def __init__(self, in_ch: int, out_ch: int, pool: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU()
        pool = (int(pool[0]), int(pool[1]))
        self.pool: nn.Module = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))

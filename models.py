"""Complete student models (raw audio in, logits out) and their registry.

Every model takes a waveform ``(batch, samples)`` and returns LOGITS ``(batch, n_classes)``;
the front-end is inside the model so the exported ONNX file needs nothing but audio.

Checkpoint files (save, load, the typed ``Checkpoint``) are in ``model_checkpoint.py``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modules import (
    AttentionPooling,
    ConvBlock2d,
    DepthwiseSeparableConv1d,
    InstanceStandardize,
    build_activation,
    build_frontend,
    build_time_pooling,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

MODEL_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a model buildable by name (and so loadable from a checkpoint)."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MODEL_REGISTRY and MODEL_REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        MODEL_REGISTRY[name] = cls
        return cls

    return decorator


def list_models() -> list[str]:
    return sorted(MODEL_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return MODEL_REGISTRY[name](**kwargs)


def deployed_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of what is exported: all but a training-only projection head."""
    projection = getattr(model, "projection", None)
    skip = {id(p) for p in projection.parameters()} if projection is not None else set()
    return [p for p in model.parameters() if id(p) not in skip]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of the deployed model (no projection head)."""
    return sum(p.numel() for p in deployed_parameters(model) if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class AudioClassifier(nn.Module):
    """Shared skeleton: front-end -> ``feature_augment`` -> per-example standardisation -> body.

    ``feature_augment`` is ``nn.Identity()`` until the trainer swaps in a ``SpecAugment``;
    neither holds parameters or buffers, so the swap never changes the state dict.
    Subclasses implement ``classify(features) -> logits`` on ``(B, n_bins, frames)``.

    ``embedding_dim > 0`` adds a projection head (``self.projection``) that maps what the
    backbone hears to a vector of that size (BirdNET's 1024-d embedding, for embedding
    distillation): ``model(audio, return_embedding=True)`` returns ``(logits, embedding)``.
    Plain ``model(audio)`` never runs it, so exported models do not contain it. Subclasses
    with a projection implement ``classify_and_embed(features)``.
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 32000,
        clip_duration: float = 3.0,
        frontend: str = "logmel",
        n_mels: int = 64,
        dropout: float = 0.3,
        frontend_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes
        self.sample_rate = sample_rate
        self.clip_duration = clip_duration
        self.dropout_rate = dropout
        self.frontend = build_frontend(
            frontend, sample_rate, n_bins=n_mels, **dict(frontend_kwargs or {})
        )
        self.n_bins: int = self.frontend.n_bins
        self.feature_augment: nn.Module = nn.Identity()
        self.normalize = InstanceStandardize()

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_duration))

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 2:
            raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")
        return self.normalize(self.feature_augment(self.frontend(audio)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify_and_embed(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no projection head")

    def forward(
        self, audio: torch.Tensor, return_embedding: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.features(audio)
        if return_embedding:
            if getattr(self, "projection", None) is None:
                raise ValueError(
                    f"{type(self).__name__} was built without a projection head; set "
                    "model.embedding_dim (1024 for BirdNET's embedding)"
                )
            return self.classify_and_embed(features)
        return self.classify(features)


def projection_head(in_dim: int, embedding_dim: int, attention_hidden: int = 0
                    ) -> nn.Module | None:
    """Frames ``(B, T, in_dim)`` -> an embedding ``(B, embedding_dim)``, or None for 0.

    Its own attention pooling (a teacher embedding averages the whole window, a class
    decision may look at a few frames) and a hidden layer, so that a tiny backbone's features
    need not be a linear map of BirdNET's.
    """
    if embedding_dim <= 0:
        return None
    return nn.Sequential(
        AttentionPooling(in_dim, attention_hidden),
        nn.Linear(in_dim, 2 * in_dim),
        nn.ReLU(),
        nn.Linear(2 * in_dim, embedding_dim),
    )


class RecurrentClassifier(AudioClassifier):
    """A model whose ``frames`` (B, T', H) feed both the class head and the projection."""

    def frames(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.frames(features))

    def classify_and_embed(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.frames(features)
        return self.head(x), self.projection(x)


@register_model("dscnn_gru")
class DSCNNGRU(RecurrentClassifier):
    """The default edge student (~50k parameters): 1-D depthwise-separable CNN + GRU + attention.

    Feature bins are channels and time is the only conv axis, which is far cheaper than 2-D
    convs at the same receptive field. The conv blocks are causal and the GRU unidirectional,
    so they could run frame by frame on a stream (the per-clip input standardisation and the
    attention pooling would then need running versions). Two stride-2 blocks cut the frame
    rate by 4 before the GRU, the only sequential (slow) part.
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 32000,
        clip_duration: float = 3.0,
        frontend: str = "logmel",
        n_mels: int = 64,
        dropout: float = 0.3,
        channels: int = 64,
        gru_hidden: int = 48,
        n_blocks: int = 4,
        kernel_size: int = 9,
        strides: Sequence[int] | None = None,
        block_dropout: float = 0.0,
        activation: str = "relu",
        attention_hidden: int = 0,
        frontend_kwargs: Mapping[str, Any] | None = None,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__(
            n_classes, sample_rate, clip_duration, frontend, n_mels, dropout, frontend_kwargs
        )
        if strides is None:
            strides = [2 if i in (1, 3) else 1 for i in range(n_blocks)]
        if len(strides) != n_blocks:
            raise ValueError(f"strides has {len(strides)} entries but n_blocks is {n_blocks}")
        self.stem = nn.Sequential(
            nn.Conv1d(self.n_bins, channels, kernel_size=1, bias=False),
            nn.BatchNorm1d(channels),
            build_activation(activation),
        )
        self.blocks = nn.Sequential(
            *(
                DepthwiseSeparableConv1d(
                    channels,
                    channels,
                    kernel_size,
                    stride=int(stride),
                    causal=True,
                    se=True,
                    dropout=block_dropout,
                    activation=activation,
                )
                for stride in strides
            )
        )
        self.gru = nn.GRU(channels, gru_hidden, num_layers=1, batch_first=True)
        self.head = build_time_pooling(
            "attention", gru_hidden, n_classes, dropout, attention_hidden=attention_hidden
        )
        self.projection = projection_head(gru_hidden, embedding_dim, attention_hidden)

    def frames(self, features: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(features))  # (B, C, T')
        x, _ = self.gru(x.transpose(1, 2))  # (B, T', H)
        return x



@register_model("cnn2d")
class CNN2D(AudioClassifier):
    """Baseline: conv-BN-ReLU-pool blocks on the spectrogram image, global average, linear."""

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 32000,
        clip_duration: float = 3.0,
        frontend: str = "logmel",
        n_mels: int = 64,
        dropout: float = 0.3,
        channels: Sequence[int] = (16, 32, 64, 128),
        frontend_kwargs: Mapping[str, Any] | None = None,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__(
            n_classes, sample_rate, clip_duration, frontend, n_mels, dropout, frontend_kwargs
        )
        widths = [1, *channels]
        self.blocks = nn.Sequential(
            *(ConvBlock2d(widths[i], widths[i + 1], pool=(2, 2)) for i in range(len(channels)))
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(widths[-1], n_classes)
        self.projection = (
            nn.Sequential(nn.Linear(widths[-1], widths[-1]), nn.ReLU(),
                          nn.Linear(widths[-1], embedding_dim))
            if embedding_dim > 0 else None
        )

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        return self.blocks(features.unsqueeze(1)).mean(dim=(2, 3))  # (B, C)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooled(features)))

    def classify_and_embed(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pooled(features)
        return self.classifier(self.dropout(x)), self.projection(x)


@register_model("crnn")
class CRNN(RecurrentClassifier):
    """Baseline CRNN: 2-D conv blocks shrink frequency, a GRU reads time, a pooling head decides.

    ``pooling`` picks how frame features become a clip decision: ``"attention"``,
    ``"linear_softmax"`` (multiple-instance pooling of frame probabilities) or ``"max"``;
    all return logits.
    """

    def __init__(
        self,
        n_classes: int,
        sample_rate: int = 32000,
        clip_duration: float = 3.0,
        frontend: str = "logmel",
        n_mels: int = 64,
        dropout: float = 0.3,
        channels: Sequence[int] = (16, 32, 64),
        freq_pools: Sequence[int] = (4, 4, 2),
        time_pools: Sequence[int] = (1, 2, 2),
        gru_hidden: int = 64,
        bidirectional: bool = True,
        pooling: str = "attention",
        attention_hidden: int = 0,
        frontend_kwargs: Mapping[str, Any] | None = None,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__(
            n_classes, sample_rate, clip_duration, frontend, n_mels, dropout, frontend_kwargs
        )
        if not len(channels) == len(freq_pools) == len(time_pools):
            raise ValueError("channels, freq_pools and time_pools need the same length")
        freq_left = self.n_bins // math.prod(freq_pools)
        if freq_left < 1:
            raise ValueError(f"freq_pools {tuple(freq_pools)} shrink {self.n_bins} bins to nothing")
        widths = [1, *channels]
        self.blocks = nn.Sequential(
            *(
                ConvBlock2d(widths[i], widths[i + 1], pool=(freq_pools[i], time_pools[i]))
                for i in range(len(channels))
            )
        )
        self.gru = nn.GRU(
            widths[-1] * freq_left, gru_hidden, batch_first=True, bidirectional=bidirectional
        )
        gru_out = gru_hidden * (2 if bidirectional else 1)
        self.head = build_time_pooling(
            pooling, gru_out, n_classes, dropout, attention_hidden=attention_hidden
        )
        self.projection = projection_head(gru_out, embedding_dim, attention_hidden)

    def frames(self, features: torch.Tensor) -> torch.Tensor:
        x = self.blocks(features.unsqueeze(1))  # (B, C, F', T')
        x = x.flatten(1, 2).transpose(1, 2)  # (B, T', C * F')
        x, _ = self.gru(x)
        return x



# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def model_summary(model: nn.Module, sample_rate: int, clip_duration: float) -> dict[str, int]:
    """Size and cost of one clip: trainable ``parameters``, ``macs`` and ``size_bytes_fp32``.

    ``macs`` are multiply-accumulates for one clip (batch 1), counted by ``FlopCounterMode``
    (flops / 2). It counts matrix products and convolutions (incl. the GRU's, the mel matmul
    and a ``stft_method="conv"`` DFT) but NOT ``torch.stft`` (an FFT, roughly
    ``n_frames * n_fft * log2(n_fft)`` real operations, ~3 M at the defaults) nor element-wise
    work (activations, BN, PCEN), which is small next to the products.
    ``size_bytes_fp32`` is 4 bytes x (all parameters + floating-point buffers such as BN
    statistics and the mel matrix): the float32 weight payload of an export.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        audio = torch.zeros(1, int(round(sample_rate * clip_duration)), device=device)
        audio[0, ::97] = 0.1  # not pure silence, so no op can shortcut on zeros
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(audio)
        macs = counter.get_total_flops() // 2
    finally:
        model.train(was_training)
    n_weights = sum(p.numel() for p in deployed_parameters(model))
    n_weights += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return {
        "parameters": count_parameters(model),
        "macs": int(macs),
        "size_bytes_fp32": int(4 * n_weights),
    }

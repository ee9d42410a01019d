"""Front-ends, augmentation, conv and pooling blocks: shapes, reference values, causality."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from modules import (
    FRONTENDS,
    AttentionPooling,
    DepthwiseSeparableConv1d,
    ExponentialSmoother,
    InstanceStandardize,
    LearnableWarpedFilterbank,
    LinearSoftmaxPooling,
    LogLinearFilterbankFrontend,
    LogMelFrontend,
    MaxPooling,
    PCENFrontend,
    SpecAugment,
    SqueezeExcite1d,
    build_frontend,
    build_time_pooling,
)

SR = 32000
N_SAMPLES = 96000  # 3 s at 32 kHz
N_FRAMES = 1 + N_SAMPLES // 320


@pytest.fixture
def audio() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(2, N_SAMPLES, generator=generator)
    t = torch.arange(N_SAMPLES) / SR
    chirp = 0.3 * torch.sin(2 * torch.pi * (2000 + 1000 * t) * t)  # a bird-ish sweep
    return noise + chirp


# ----------------------------------------------------------------------------- front-ends


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_frontend_shape_and_finite(name: str, audio: torch.Tensor) -> None:
    frontend = build_frontend(name, SR, n_bins=64)
    features = frontend(audio)
    assert features.shape == (2, 64, N_FRAMES)
    assert frontend.n_bins == 64
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_frontend_finite_on_silence(name: str) -> None:
    assert torch.isfinite(build_frontend(name, SR)(torch.zeros(1, N_SAMPLES))).all()


def test_build_frontend_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="logmel.*loglinear.*pcen"):
        build_frontend("mfcc", SR)


def test_logmel_matches_librosa(audio: torch.Tensor) -> None:
    frontend = LogMelFrontend(SR, n_fft=1024, hop_length=320, n_mels=64, f_min=50.0)
    ours = frontend(audio)[0].numpy()
    mel = librosa.feature.melspectrogram(
        y=audio[0].numpy(),
        sr=SR,
        n_fft=1024,
        hop_length=320,
        n_mels=64,
        fmin=50.0,
        power=2.0,
        center=True,
        pad_mode="reflect",
    )
    np.testing.assert_allclose(ours, np.log(mel + 1e-6), atol=1e-3, rtol=0)


def test_conv_stft_matches_torch_stft(audio: torch.Tensor) -> None:
    fft_based = LogMelFrontend(SR, stft_method="stft")(audio)
    conv_based = LogMelFrontend(SR, stft_method="conv")(audio)
    torch.testing.assert_close(conv_based, fft_based, atol=1e-3, rtol=0)
    # Same state dict either way, so a model trained with one can export with the other.
    assert LogMelFrontend(stft_method="conv").state_dict().keys() == (
        LogMelFrontend(stft_method="stft").state_dict().keys()
    )


def test_loglinear_at_700_hz_is_htk_mel() -> None:
    filterbank = LearnableWarpedFilterbank(SR, 1024, n_filters=64, f_min=50.0, init_break_hz=700.0)
    htk = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=50.0, htk=True)
    np.testing.assert_allclose(filterbank.weights().detach().numpy(), htk, atol=1e-6)


def test_loglinear_breakpoint_gets_gradient(audio: torch.Tensor) -> None:
    frontend = LogLinearFilterbankFrontend(SR)
    params = dict(frontend.named_parameters())
    assert list(params) == ["filterbank.log_f_break"]
    frontend(audio).mean().backward()
    grad = frontend.filterbank.log_f_break.grad
    assert grad is not None and torch.isfinite(grad) and grad.abs() > 0


def test_loglinear_smaller_breakpoint_is_more_log_like() -> None:
    def low_filters(break_hz: float) -> int:
        filterbank = LearnableWarpedFilterbank(SR, 1024, 64, 50.0, None, init_break_hz=break_hz)
        return int((filterbank.center_frequencies() < 1000.0).sum())

    counts = [low_filters(hz) for hz in (50.0, 300.0, 700.0, 3000.0, 20000.0)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1] + 10


def test_loglinear_has_no_empty_filters_when_very_log_like() -> None:
    filterbank = LearnableWarpedFilterbank(SR, 1024, 64, 50.0, None, init_break_hz=5.0)
    assert (filterbank.weights().sum(dim=1) > 0).all()


def test_pcen_finite_and_parameters_get_gradients(audio: torch.Tensor) -> None:
    frontend = PCENFrontend(SR)
    out = frontend(audio)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name in ("log_alpha", "log_delta", "log_r"):
        param = getattr(frontend.pcen, name)
        assert param.shape == (64, 1)
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert param.grad.abs().sum() > 0, name


def test_pcen_not_trainable_has_no_trainable_parameters() -> None:
    frontend = PCENFrontend(SR, trainable=False)
    assert not any(p.requires_grad for p in frontend.parameters())


def test_smoother_matches_iir_recursion() -> None:
    s = 0.025
    energy = torch.rand(1, 3, 300) + 0.5
    smoothed = ExponentialSmoother(s)(energy)
    expected = torch.empty_like(energy)
    state = energy[..., 0]  # the state before the clip is the first frame, as in librosa
    for t in range(energy.shape[-1]):
        state = (1 - s) * state + s * energy[..., t]
        expected[..., t] = state
    torch.testing.assert_close(smoothed, expected, atol=2e-3, rtol=0)
    constant = torch.full((1, 2, 50), 3.0)
    torch.testing.assert_close(ExponentialSmoother(s)(constant), constant)


@pytest.mark.parametrize("smooth_coef", [0.025, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("frames", [1, 7, 151, 400])
def test_smoother_equals_truncated_renormalised_filter(smooth_coef: float, frames: int) -> None:
    # The doubling scheme must be exactly the truncated FIR it replaces, clips shorter than
    # the filter included (edge padding stands in for the frames before the clip).
    smoother = ExponentialSmoother(smooth_coef)
    taps = smooth_coef * (1 - smooth_coef) ** torch.arange(smoother.length, dtype=torch.float64)
    taps = taps / taps.sum()
    energy = torch.rand(2, 4, frames, dtype=torch.float64) * 10
    padded = torch.cat([energy[..., :1].expand(2, 4, smoother.length - 1), energy], dim=-1)
    expected = torch.stack(
        [padded[..., t : t + smoother.length] @ taps.flip(0) for t in range(frames)], dim=-1
    )
    torch.testing.assert_close(smoother(energy), expected, rtol=1e-9, atol=1e-9)


def test_instance_standardize_removes_gain() -> None:
    features = torch.randn(2, 64, 100)
    norm = InstanceStandardize()
    torch.testing.assert_close(norm(features + 4.6), norm(features), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- SpecAugment


def test_specaugment_identity_in_eval() -> None:
    features = torch.randn(2, 64, N_FRAMES)
    augment = SpecAugment(time_mask_param=30, freq_mask_param=10).eval()
    assert torch.equal(augment(features), features)


def test_specaugment_identity_with_zero_params() -> None:
    features = torch.randn(2, 64, N_FRAMES)
    assert torch.equal(SpecAugment().train()(features), features)


def test_specaugment_masks_in_train_with_example_mean() -> None:
    torch.manual_seed(0)
    features = torch.randn(4, 64, N_FRAMES) - 5.0
    augment = SpecAugment(time_mask_param=40, freq_mask_param=12).train()
    out = augment(features)
    assert out.shape == features.shape
    changed = out != features
    assert changed.any()
    for i in range(features.shape[0]):
        fill = features[i].mean()
        assert torch.allclose(out[i][changed[i]], fill.expand(int(changed[i].sum())))
    assert not any(True for _ in augment.parameters())
    assert augment.state_dict() == {}


# ----------------------------------------------------------------------------- conv blocks


@pytest.mark.parametrize("stride", [1, 2])
def test_causal_block_ignores_the_future(stride: int) -> None:
    torch.manual_seed(0)
    block = DepthwiseSeparableConv1d(8, 8, kernel_size=5, stride=stride, causal=True).eval()
    x = torch.randn(1, 8, 60)
    cut = 31  # input frames >= cut are perturbed
    future = x.clone()
    future[..., cut:] += 3.0 * torch.randn(1, 8, 60 - cut)
    with torch.no_grad():
        before, after = block(x), block(future)
    assert before.shape == (1, 8, -(-60 // stride))
    unaffected = (cut - 1) // stride + 1  # outputs j with j * stride < cut
    torch.testing.assert_close(after[..., :unaffected], before[..., :unaffected])
    assert not torch.allclose(after[..., unaffected:], before[..., unaffected:])


def test_non_causal_block_does_look_ahead() -> None:
    """Guards the causality test itself: a centred block must fail it."""
    torch.manual_seed(0)
    block = DepthwiseSeparableConv1d(8, 8, kernel_size=5, causal=False).eval()
    x = torch.randn(1, 8, 60)
    future = x.clone()
    future[..., 31:] += 3.0
    with torch.no_grad():
        assert not torch.allclose(block(future)[..., :31], block(x)[..., :31])


def test_block_projects_residual_when_channels_change() -> None:
    block = DepthwiseSeparableConv1d(8, 16, kernel_size=3, stride=2, dropout=0.1)
    out = block(torch.randn(2, 8, 75))
    assert out.shape == (2, 16, 38)
    assert block.bn1.momentum == pytest.approx(0.1)


def test_causal_squeeze_excite_uses_running_mean() -> None:
    torch.manual_seed(0)
    se = SqueezeExcite1d(8, causal=True).eval()
    x = torch.randn(1, 8, 20)
    future = x.clone()
    future[..., 10:] += 5.0
    torch.testing.assert_close(se(future)[..., :10], se(x)[..., :10])


# ----------------------------------------------------------------------------- pooling


def test_attention_pooling_is_a_weighted_mean_of_frames() -> None:
    pool = AttentionPooling(16, hidden=8)
    x = torch.randn(3, 40, 16)
    out = pool(x)
    assert out.shape == (3, 16)
    assert (out <= x.amax(dim=1) + 1e-5).all() and (out >= x.amin(dim=1) - 1e-5).all()


def test_max_pooling() -> None:
    x = torch.randn(3, 40, 16)
    torch.testing.assert_close(MaxPooling(16)(x), x.amax(dim=1))


def test_linear_softmax_returns_logits_between_frame_probabilities() -> None:
    pool = LinearSoftmaxPooling(16, n_classes=5)
    x = torch.randn(3, 40, 16)
    logits = pool(x)
    assert logits.shape == (3, 5)
    frame_prob = torch.sigmoid(pool.frame_classifier(x))
    clip_prob = torch.sigmoid(logits)
    assert (clip_prob <= frame_prob.amax(dim=1) + 1e-5).all()
    assert (clip_prob >= frame_prob.amin(dim=1) - 1e-5).all()


@pytest.mark.parametrize("name", ["attention", "linear_softmax", "max"])
def test_build_time_pooling_gives_logits(name: str) -> None:
    head = build_time_pooling(name, in_dim=16, n_classes=7, dropout=0.2)
    out = head(torch.randn(3, 40, 16))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_build_time_pooling_unknown_name() -> None:
    with pytest.raises(ValueError, match="attention.*linear_softmax.*max"):
        build_time_pooling("mean", 16, 7)

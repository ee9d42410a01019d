"""Losses and class weights: hand-computed values, distillation behaviour, weight cache."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from distillation.losses import (
    LOSS_TYPES,
    AdaptiveFocalLoss,
    ClassWeightError,
    CrossEntropyLoss,
    DistillationLoss,
    FocalDistillationLoss,
    FocalLoss,
    build_loss,
    effective_number_weights,
    format_class_weights,
    inverse_frequency_weights,
    needs_teacher,
    resolve_class_weights,
)
from distillation.losses.class_weights import count_labels

# A fixed small batch: 4 items, 3 classes (two species + no_birds).
LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-0.5, 1.5, 0.0], [1.0, -2.0, 3.0]])
LABELS = np.array([0, 2, 1, 0])
TEACHER = np.array([[3.0, -1.0, 0.0], [0.0, 0.0, 2.0], [-2.0, 4.0, 1.0], [0.5, 0.5, 0.5]])
WEIGHTS = np.array([1.0, 2.0, 0.5])
CLASSES = ["Turdus_merula", "Parus_major", "no_birds"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread start-up dominates, and on a busy machine it is 50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def make_batch(teacher=TEACHER, has_teacher=(True, True, True, True), labels=LABELS) -> dict:
    return {
        "label": torch.tensor(labels, dtype=torch.long),
        "teacher_logits": torch.tensor(teacher, dtype=torch.float64),
        "has_teacher": torch.tensor(has_teacher, dtype=torch.bool),
    }


def logits_tensor(values=LOGITS) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def expected_ce_terms(logits=LOGITS, labels=LABELS, weights=WEIGHTS):
    nll = -np_log_softmax(logits)[np.arange(len(labels)), labels]
    return weights[labels] * nll, weights[labels]


def expected_softmax_kl(student, teacher, temperature):
    log_p = np_log_softmax(teacher / temperature)
    log_q = np_log_softmax(student / temperature)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(axis=1)


def expected_sigmoid_kl(student, teacher, temperature):
    p = np_sigmoid(teacher / temperature)
    q = np_sigmoid(student / temperature)
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    return temperature**2 * kl.mean(axis=1)


# --- hand-computed values ---------------------------------------------------------------------


def test_weighted_cross_entropy_matches_hand_value():
    terms, weights = expected_ce_terms()
    loss = CrossEntropyLoss(torch.tensor(WEIGHTS))(logits_tensor(), make_batch())
    assert loss.item() == pytest.approx(terms.sum() / weights.sum(), rel=1e-6)


def test_focal_matches_hand_value():
    gamma = 2.0
    p = np.exp(np_log_softmax(LOGITS))
    p_t = p[np.arange(4), LABELS]
    focal = WEIGHTS[LABELS] * (1 - p_t) ** gamma * -np.log(p_t)
    expected = focal.sum() / WEIGHTS[LABELS].sum()
    loss = FocalLoss(gamma, torch.tensor(WEIGHTS))(logits_tensor(), make_batch())
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(16, 5, dtype=torch.float64)
    labels = torch.randint(0, 5, (16,))
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25])
    focal = FocalLoss(0.0, weights)(logits, {"label": labels})
    reference = F.cross_entropy(logits, labels, weight=weights.double())
    assert focal.item() == pytest.approx(reference.item(), rel=1e-10)


@pytest.mark.parametrize("alpha, temperature", [(0.5, 4.0), (0.3, 2.0), (1.0, 1.0)])
def test_distillation_matches_hand_value(alpha, temperature):
    has_teacher = np.array([True, False, True, True])
    terms, weights = expected_ce_terms()
    soft = expected_softmax_kl(LOGITS, TEACHER, temperature)
    hard_scale = np.where(has_teacher, 1 - alpha, 1.0)
    expected = (hard_scale * terms).sum() / weights.sum() + alpha * soft[has_teacher].sum() / 4
    loss = DistillationLoss(alpha, temperature, "softmax", torch.tensor(WEIGHTS))
    value = loss(logits_tensor(), make_batch(has_teacher=has_teacher))
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_focal_distillation_matches_hand_value():
    alpha, temperature, gamma = 0.4, 3.0, 1.5
    p_t = np.exp(np_log_softmax(LOGITS))[np.arange(4), LABELS]
    focal = WEIGHTS[LABELS] * (1 - p_t) ** gamma * -np.log(p_t)
    soft = expected_softmax_kl(LOGITS, TEACHER, temperature)
    expected = (1 - alpha) * focal.sum() / WEIGHTS[LABELS].sum() + alpha * soft.mean()
    loss = FocalDistillationLoss(alpha, temperature, gamma, "softmax", torch.tensor(WEIGHTS))
    assert loss(logits_tensor(), make_batch()).item() == pytest.approx(expected, rel=1e-6)


def test_sigmoid_soft_target_matches_hand_value_and_differs_from_softmax():
    temperature = 2.0
    batch = make_batch()
    sigmoid = DistillationLoss(1.0, temperature, "sigmoid")(logits_tensor(), batch)
    softmax = DistillationLoss(1.0, temperature, "softmax")(logits_tensor(), batch)
    expected = expected_sigmoid_kl(LOGITS, TEACHER, temperature).mean()
    assert sigmoid.item() == pytest.approx(expected, rel=1e-6)
    assert abs(sigmoid.item() - softmax.item()) > 1e-3
    # Both are divergences: zero when the student's logits equal the teacher's.
    for target in ("sigmoid", "softmax"):
        same = DistillationLoss(1.0, temperature, target)(logits_tensor(TEACHER), batch)
        assert same.item() == pytest.approx(0.0, abs=1e-9)


def test_adaptive_focal_first_batch_is_focal_with_gamma_init():
    loss = AdaptiveFocalLoss(
        3, gamma_min=0.5, gamma_max=5.0, gamma_init=2.0, class_weights=torch.tensor(WEIGHTS)
    )
    reference = FocalLoss(2.0, torch.tensor(WEIGHTS))(logits_tensor(), make_batch())
    assert loss(logits_tensor(), make_batch()).item() == pytest.approx(reference.item())


def test_adaptive_focal_ema_update_matches_hand_value():
    momentum = 0.8
    loss = AdaptiveFocalLoss(3, gamma_min=1.0, gamma_max=3.0, momentum=momentum, gamma_init=2.0)
    loss(logits_tensor(), make_batch())
    p_t = np.exp(np_log_softmax(LOGITS))[np.arange(4), LABELS]
    start = 0.5  # gamma_init = 2 sits halfway between the bounds
    ema = np.array(
        [
            momentum * start + (1 - momentum) * p_t[[0, 3]].mean(),
            momentum * start + (1 - momentum) * p_t[2],
            momentum * start + (1 - momentum) * p_t[1],
        ]
    )
    np.testing.assert_allclose(loss.ema_pt.numpy(), ema, rtol=1e-5)
    np.testing.assert_allclose(loss.gamma.numpy(), 1.0 + 2.0 * (1 - ema), rtol=1e-5)


# --- distillation behaviour -------------------------------------------------------------------


def test_soft_loss_depends_on_teacher_logits():
    loss = DistillationLoss(alpha=1.0, temperature=4.0)
    first = loss(logits_tensor(), make_batch())
    changed = TEACHER.copy()
    changed[0] = [-3.0, 2.0, 1.0]
    second = loss(logits_tensor(), make_batch(teacher=changed))
    assert abs(first.item() - second.item()) > 1e-3


@pytest.mark.parametrize("soft_target", ["softmax", "sigmoid"])
def test_sgd_moves_student_toward_softened_teacher(soft_target):
    torch.manual_seed(0)
    temperature = 4.0
    features = torch.randn(32, 6)
    teacher = torch.randn(32, 4) * 3.0
    model = torch.nn.Linear(6, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = DistillationLoss(alpha=1.0, temperature=temperature, soft_target=soft_target)
    batch = {
        "label": torch.randint(0, 4, (32,)),
        "teacher_logits": teacher,
        "has_teacher": torch.ones(32, dtype=torch.bool),
    }

    def kl() -> float:
        with torch.no_grad():
            log_q = F.log_softmax(model(features) / temperature, dim=1)
            log_p = F.log_softmax(teacher / temperature, dim=1)
            return float((log_p.exp() * (log_p - log_q)).sum(1).mean())

    before = kl()
    for _ in range(20):
        optimizer.zero_grad()
        loss(model(features), batch).backward()
        optimizer.step()
    assert kl() < 0.8 * before


def test_items_without_teacher_contribute_only_hard_loss():
    alpha, temperature = 0.7, 2.0
    loss = DistillationLoss(alpha, temperature)
    junk = TEACHER.copy()
    junk[1] = np.nan  # a window without soft labels may carry anything
    has_teacher = (True, False, True, True)
    logits = logits_tensor()
    value = loss(logits, make_batch(teacher=junk, has_teacher=has_teacher))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    # The junk row does not matter ...
    other = TEACHER.copy()
    other[1] = [9.0, -9.0, 0.0]
    again = loss(logits_tensor(), make_batch(teacher=other, has_teacher=has_teacher))
    assert again.item() == pytest.approx(value.item(), rel=1e-12)
    # ... and the item's hard loss counts in full (weight 1, not 1 - alpha).
    terms, _ = expected_ce_terms(weights=np.ones(3))
    soft = expected_softmax_kl(LOGITS, TEACHER, temperature)
    mask = np.array(has_teacher)
    expected = ((1 - alpha) * terms[mask].sum() + terms[~mask].sum() + alpha * soft[mask].sum()) / 4
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # A batch with no teacher at all is plain cross-entropy.
    none = loss(logits_tensor(), make_batch(teacher=junk, has_teacher=(False,) * 4))
    assert none.item() == pytest.approx(terms.mean(), rel=1e-6)


def test_soft_gradient_scale_is_stable_across_temperatures():
    torch.manual_seed(1)
    student = torch.randn(64, 8, dtype=torch.float64) * 2.0
    teacher = torch.randn(64, 8, dtype=torch.float64) * 2.0
    batch = {"label": torch.zeros(64, dtype=torch.long), "teacher_logits": teacher}
    for soft_target in ("softmax", "sigmoid"):
        norms = []
        for temperature in (1.0, 2.0, 4.0, 8.0):
            logits = student.clone().requires_grad_(True)
            DistillationLoss(1.0, temperature, soft_target)(logits, batch).backward()
            norms.append(logits.grad.norm().item())
        # Without T^2 the norm would fall by ~64x from T=1 to T=8.
        assert max(norms) / min(norms) < 4.0, (soft_target, norms)


def test_distillation_without_teacher_logits_is_a_clear_error():
    with pytest.raises(KeyError, match="teacher_logits"):
        DistillationLoss()(logits_tensor(), {"label": torch.tensor(LABELS)})


def test_teacher_shape_mismatch_is_a_clear_error():
    batch = make_batch(teacher=TEACHER[:, :2])
    with pytest.raises(ValueError, match="teacher_logits have shape"):
        DistillationLoss()(logits_tensor(), batch)


# --- adaptive focal ---------------------------------------------------------------------------


def hard_class_batch() -> tuple[torch.Tensor, dict]:
    """Class 0 always predicted as class 1 (hard); class 1 always right (easy)."""
    labels = torch.tensor([0] * 8 + [1] * 8)
    logits = torch.zeros(16, 3)
    logits[:, 1] = 6.0
    return logits, {"label": labels}


def test_adaptive_gamma_rises_for_a_misclassified_class_and_stays_in_bounds():
    loss = AdaptiveFocalLoss(3, gamma_min=0.5, gamma_max=5.0, momentum=0.9)
    logits, batch = hard_class_batch()
    history = []
    for _ in range(60):
        loss(logits, batch)
        history.append(loss.gamma.clone())
    gammas = torch.stack(history)
    assert (gammas >= 0.5).all() and (gammas <= 5.0).all()
    assert gammas[-1, 0] > 4.9  # hard class -> gamma_max
    assert gammas[-1, 1] < 0.6  # easy class -> gamma_min
    assert gammas[-1, 2] == pytest.approx(2.0)  # never seen: stays at gamma_init
    assert (gammas[1:, 0] >= gammas[:-1, 0]).all()
    assert loss.batches_seen.tolist() == [60, 60, 0]


def test_adaptive_gamma_does_not_update_in_eval_mode_or_when_frozen():
    loss = AdaptiveFocalLoss(3)
    logits, batch = hard_class_batch()
    start = loss.ema_pt.clone()
    loss.eval()
    loss(logits, batch)
    assert torch.equal(loss.ema_pt, start)
    loss.train()
    with loss.frozen_statistics():
        loss(logits, batch)
    assert torch.equal(loss.ema_pt, start)
    loss(logits, batch)
    assert not torch.equal(loss.ema_pt, start)


def test_adaptive_focal_can_distil():
    loss = AdaptiveFocalLoss(3, alpha=1.0, temperature=2.0)
    expected = expected_softmax_kl(LOGITS, TEACHER, 2.0).mean()
    assert loss(logits_tensor(), make_batch()).item() == pytest.approx(expected, rel=1e-6)


def test_adaptive_focal_rejects_bad_bounds():
    with pytest.raises(ValueError, match="gamma_max"):
        AdaptiveFocalLoss(3, gamma_min=3.0, gamma_max=1.0)


# --- class weights ----------------------------------------------------------------------------


def test_inverse_frequency_weights():
    counts = np.array([10.0, 30.0, 60.0])
    plain = inverse_frequency_weights(counts, 1.0).numpy()
    np.testing.assert_allclose(plain, [10 / 3, 10 / 9, 5 / 9], rtol=1e-6)
    root = inverse_frequency_weights(counts, 0.5).numpy()
    raw = 1 / np.sqrt(counts)
    np.testing.assert_allclose(root, raw * counts.sum() / (raw * counts).sum(), rtol=1e-6)
    for weights in (plain, root):  # mean weight over windows is 1
        assert (weights * counts).sum() / counts.sum() == pytest.approx(1.0)
    assert inverse_frequency_weights(counts, 0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_effective_number_weights():
    counts = np.array([1.0, 5.0, 50.0])
    beta = 0.9
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    expected = raw * counts.sum() / (raw * counts).sum()
    weights = effective_number_weights(counts, beta).numpy()
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert effective_number_weights(counts, 0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_absent_class_gets_the_largest_weight_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        weights = inverse_frequency_weights([10, 0, 40]).numpy()
    assert weights[1] == pytest.approx(weights.max()) and weights[1] == weights[0]
    assert "no training windows" in caplog.text


def test_count_labels_from_names_and_with_fast_sampling():
    labels = ["no_birds"] * 600 + ["Turdus_merula"] * 300 + ["Parus_major"] * 100
    assert count_labels(labels, CLASSES).tolist() == [300, 100, 600]
    sampled = count_labels(labels, CLASSES, use_fast_sampling=True, samples=200, seed=3,
                           sampling_strategy="random")
    assert sampled.sum() == pytest.approx(1000)
    assert np.allclose(sampled, count_labels(labels, CLASSES, True, 200, 3, "random"))
    assert abs(sampled[2] - 600) < 150
    # Stratified keeps every class's share, even one too rare for a random draw to hit.
    rare = ["no_birds"] * 5000 + ["Turdus_merula"] * 4998 + ["Parus_major"] * 2
    stratified = count_labels(rare, CLASSES, True, 100, 0, "stratified")
    assert stratified.sum() == pytest.approx(10_000) and stratified[1] > 0
    assert np.allclose(stratified, [4998, 2, 5000], rtol=0.05, atol=100)
    missed = [count_labels(rare, CLASSES, True, 100, seed, "random")[1] for seed in range(20)]
    assert min(missed) == 0  # what stratified sampling avoids
    with pytest.raises(ClassWeightError, match="sampling_strategy"):
        count_labels(rare, CLASSES, True, 100, 0, "systematic")
    manifest = pd.DataFrame({"path": [f"{i}.wav" for i in range(3)], "label": CLASSES})
    assert count_labels(manifest, CLASSES).tolist() == [1, 1, 1]
    records = manifest.to_dict("records")
    assert count_labels(records, CLASSES).tolist() == [1, 1, 1]
    with pytest.raises(ClassWeightError, match="not in the class list"):
        count_labels(["Corvus_corax"], CLASSES)


def test_manual_weights_are_validated():
    result = resolve_class_weights([1.0, 2.0, 0.5], labels=None, class_names=CLASSES)
    assert result.source == "manual" and result.weights.tolist() == [1.0, 2.0, 0.5]
    with pytest.raises(ClassWeightError, match="expected 3 weights") as error:
        resolve_class_weights([1.0, 2.0], labels=None, class_names=CLASSES)
    assert "no_birds" in str(error.value)
    assert isinstance(error.value, ValueError)
    with pytest.raises(ClassWeightError, match="> 0"):
        resolve_class_weights([1.0, 0.0, 1.0], labels=None, class_names=CLASSES)
    with pytest.raises(ClassWeightError, match="'auto'"):
        resolve_class_weights("balanced", labels=None, class_names=CLASSES)
    assert resolve_class_weights(None, labels=None, class_names=CLASSES).weights is None


def auto(tmp_path, labels, **kwargs):
    settings = dict(labels=labels, class_names=CLASSES, cache_dir=tmp_path / "cache")
    settings.update(kwargs)
    return resolve_class_weights("auto", **settings)


def test_auto_weights_and_cache_hit(tmp_path):
    labels = [0] * 10 + [1] * 30 + [2] * 60
    first = auto(tmp_path, labels)
    assert first.source == "computed" and not first.cache_hit
    assert first.cache_path is not None and first.cache_path.is_file()
    np.testing.assert_allclose(first.weights.numpy(), [10 / 3, 10 / 9, 5 / 9], rtol=1e-6)
    second = auto(tmp_path, labels)
    assert second.cache_hit and torch.equal(second.weights, first.weights)
    assert second.cache_path == first.cache_path
    # Names or indices of the same labels are the same content, hence the same entry.
    named = auto(tmp_path, [CLASSES[i] for i in labels])
    assert named.cache_hit
    assert "Parus_major" in format_class_weights(second, CLASSES)


def test_force_recalculate_and_stale_cache_recompute(tmp_path):
    labels = [0] * 5 + [1] * 5 + [2] * 20
    first = auto(tmp_path, labels)
    assert auto(tmp_path, labels, force_recalculate=True).source == "computed"
    entry = json.loads(first.cache_path.read_text())
    entry["created_unix"] -= 2 * 3600
    first.cache_path.write_text(json.dumps(entry))
    assert auto(tmp_path, labels, cache_max_age_hours=3).cache_hit
    assert auto(tmp_path, labels, cache_max_age_hours=1).source == "computed"
    assert auto(tmp_path, labels, cache_max_age_hours=1).cache_hit  # rewritten just now


def test_cache_key_follows_labels_and_settings(tmp_path):
    labels = [0] * 5 + [1] * 5 + [2] * 20
    first = auto(tmp_path, labels)
    changed = auto(tmp_path, labels[:-1] + [1])
    assert changed.source == "computed" and changed.cache_path != first.cache_path
    assert auto(tmp_path, labels, alpha_scaling=0.5).source == "computed"
    effective = auto(tmp_path, labels, method="effective_number", beta=0.99)
    assert effective.source == "computed"
    np.testing.assert_allclose(
        effective.weights.numpy(), effective_number_weights([5, 5, 20], 0.99).numpy()
    )


def test_no_cache_written_when_saving_is_off(tmp_path):
    result = auto(tmp_path, [0, 1, 2, 2], save_cache=False)
    assert result.source == "computed" and not (tmp_path / "cache").exists()
    assert auto(tmp_path, [0, 1, 2, 2], save_cache=False).source == "computed"


def test_corrupt_cache_is_recomputed(tmp_path):
    first = auto(tmp_path, [0, 1, 2, 2])
    first.cache_path.write_text("{not json")
    again = auto(tmp_path, [0, 1, 2, 2])
    assert again.source == "computed" and torch.equal(again.weights, first.weights)


# --- build_loss -------------------------------------------------------------------------------


EXPECTED_CLASSES = {
    "cross_entropy": CrossEntropyLoss,
    "distillation": DistillationLoss,
    "focal": FocalLoss,
    "focal_distillation": FocalDistillationLoss,
    "adaptive_focal": AdaptiveFocalLoss,
}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_build_loss_for_every_type(loss_type):
    cfg = {"type": loss_type, "gamma": 1.5, "soft_target": "sigmoid", "gamma_max": 4.0}
    loss = build_loss(
        cfg,
        class_weights=torch.tensor(WEIGHTS, dtype=torch.float32),
        n_classes=3,
        alpha=0.5,
        temperature=2.0,
    )
    assert type(loss) is EXPECTED_CLASSES[loss_type]
    assert torch.equal(loss.state_dict()["class_weights"], torch.tensor(WEIGHTS).float())
    logits = logits_tensor()
    value = loss(logits, make_batch())
    value.backward()
    assert value.ndim == 0 and math.isfinite(value.item())
    assert torch.isfinite(logits.grad).all()


def test_build_loss_reads_settings():
    focal = build_loss(
        {"type": "focal", "gamma": 3.0}, class_weights=None, n_classes=3, alpha=0.5, temperature=2.0
    )
    assert focal.gamma == 3.0
    adaptive = build_loss(
        {"type": "adaptive_focal", "gamma_min": 1.0, "gamma_max": 2.0, "gamma_momentum": 0.5},
        class_weights=None,
        n_classes=3,
        alpha=0.0,
        temperature=2.0,
    )
    assert (adaptive.gamma_min, adaptive.gamma_max, adaptive.momentum) == (1.0, 2.0, 0.5)
    assert adaptive(logits_tensor(), {"label": torch.tensor(LABELS)}).ndim == 0  # no teacher
    with pytest.raises(ValueError, match="soft_target"):
        build_loss(
            {"type": "distillation", "soft_target": "probit"},
            class_weights=None,
            n_classes=3,
            alpha=0.5,
            temperature=2.0,
        )


def test_unknown_loss_type_and_wrong_weight_count_are_clear_errors():
    with pytest.raises(ValueError, match="focal_distillation"):
        build_loss({"type": "hinge"}, class_weights=None, n_classes=3, alpha=0.5, temperature=2.0)
    with pytest.raises(ClassWeightError, match="2 class weights for 3 classes"):
        build_loss(
            {"type": "focal"}, class_weights=torch.ones(2), n_classes=3, alpha=0.5, temperature=2.0
        )
    with pytest.raises(ValueError, match="4 class weights"):
        CrossEntropyLoss(torch.ones(4))(logits_tensor(), make_batch())


def test_needs_teacher():
    assert needs_teacher("distillation") and needs_teacher("focal_distillation")
    assert not needs_teacher("cross_entropy") and not needs_teacher("focal")
    assert not needs_teacher("adaptive_focal", alpha=0.0)
    assert needs_teacher("adaptive_focal", alpha=0.3)
    with pytest.raises(ValueError, match="valid types"):
        needs_teacher("hinge")

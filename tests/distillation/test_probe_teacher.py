"""distillation.teacher_classifier=linear_probe: a logistic regression on BirdNET's embedding,
fitted on the run's labelled training windows, labels the windows that have no label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from birdnet.teacher import BirdNetTeacher
from distillation.soft_labels import SoftLabelStore, extract_soft_labels
from tests.conftest import write_wav
from tests.distillation.test_teacher_targets import CLASSES, SPECIES, _clip, _config

ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take"


def _write_esc50(root: Path, n: int = 6) -> Path:
    """An ESC-50 layout with ``n`` non-bird clips (5 s of coloured noise), one source each."""
    rows = [ESC50_HEADER]
    for i in range(n):
        name = f"{i % 5 + 1}-{100 + i}-A-10.wav"
        noise = np.random.default_rng(200 + i).normal(0, 0.05, 5 * 22050)
        write_wav(root / "audio" / name, np.cumsum(noise).astype(np.float32) * 0.01, 22050)
        rows.append(f"{name},{i % 5 + 1},10,rain,False,{100 + i},A")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe_teacher")
    for s, (species, freq) in enumerate([("Bubo_bubo", 500.0), ("Apus_apus", 6000.0)]):
        for i in range(3):
            write_wav(root / "birds" / species / f"rec{i}.wav", _clip(10 * s + i, freq), 32000)
    write_wav(root / "field" / "dawn.wav", _clip(50, 6000.0, 22050), 22050)
    write_wav(root / "field" / "dusk.wav", _clip(51, 500.0, 22050), 22050)
    _write_esc50(root / "esc50")
    # ESC-50's audio folder is also unlabelled audio, so BirdNET's records hold its clips.
    extract_soft_labels(SPECIES, root / "soft_labels", root / "birds", hop=3.0,
                        teacher=BirdNetTeacher(num_threads=1), progress=False,
                        unlabelled_dirs=[root / "field", root / "esc50" / "audio"],
                        cache_dir=None)
    return root


def _probe_config(corpus: Path, tmp: Path, *extra: str):
    pool = f"dataset.unlabelled_dirs=[{corpus / 'field'},{corpus / 'esc50' / 'audio'}]"
    return _config(corpus, corpus / "soft_labels", tmp, pool,
                   f"dataset.esc50_dir={corpus / 'esc50'}", "dataset.esc50_no_bird_ratio=1.0",
                   "distillation.teacher_classifier=linear_probe", "distillation.alpha=1.0",
                   "distillation.temperature=1.0", *extra)


def test_the_probe_labels_every_window_without_a_label(corpus, tmp_path):
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory

    cfg = _probe_config(corpus, tmp_path)
    data = build_data(cfg)
    loss_fn = distillation_loss_factory(cfg, data)
    train = data.datasets["train"]
    labelled, teacher = train.labelled, train.teacher
    # Fitted on the training split's windows, ESC-50's clips included (through their
    # unlabelled records: extraction never labels ESC-50 as such).
    clips = [e.kind == "esc50" for e in labelled.examples]
    assert any(clips) and not labelled.has_embedding[clips].any()
    # ...and they are the only no_birds windows, so the probe (which needs every class) could
    # only be fitted through them.
    no_birds = len(data.class_names) - 1
    assert all(c for c, e in zip(clips, labelled.examples, strict=True) if e.label == no_birds)
    assert teacher.probe is not None and len(teacher) > 0
    store = SoftLabelStore(corpus / "soft_labels")
    for i in range(len(teacher)):
        item = teacher[i]
        probs = item["teacher_logits"].exp()
        torch.testing.assert_close(probs.sum(), torch.tensor(1.0), atol=1e-4, rtol=0)
        window = teacher.items[i]
        embedding = store.record(window.key)["embedding"][window.row:window.row + 1]
        np.testing.assert_allclose(item["teacher_logits"].numpy(),
                                   teacher.probe(embedding)[0], rtol=1e-5)
    # They are the probe's scores, not BirdNET's own (its logits are not log-probabilities).
    birdnet = store.logits_at(teacher.items[0].key, teacher.items[0].row, data.class_names)
    assert not np.allclose(teacher[0]["teacher_logits"].numpy(), birdnet)
    # The labelled training windows learn the probe's scores too (for a soft term on them).
    # The probe was fitted on them, so it names their class.
    seen = labelled.has_embedding
    probs = np.exp(labelled.teacher_logits[seen])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(axis=1), np.asarray(labelled.labels())[seen])
    # The soft term reads them: a student that matches the probe pays less than one that
    # contradicts it.
    batch = torch.utils.data.default_collate([teacher[i] for i in range(len(teacher))])
    batch["student_embedding"] = batch["teacher_embedding"]  # the same embedding term in both
    close = loss_fn(batch["teacher_logits"].clone(), batch)
    far = loss_fn(-batch["teacher_logits"], batch)
    assert float(close) < float(far)
    assert data.class_names == [*CLASSES, "no_birds"]


def _without_the_probe(corpus: Path, tmp: Path, caplog, *extra: str, warning: str):
    """Build a run whose probe cannot be fitted: it warns, and trains the embedding only."""
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory

    cfg = _probe_config(corpus, tmp, *extra)
    data = build_data(cfg)
    with caplog.at_level("WARNING"):
        loss_fn = distillation_loss_factory(cfg, data)
    assert warning in caplog.text
    assert loss_fn.alpha == 0 and loss_fn.embedding_weight > 0
    teacher = data.datasets["train"].teacher
    assert teacher.probe is None and len(teacher) > 0
    return loss_fn


def test_without_a_labelled_window_of_every_class_the_run_goes_on_without_the_probe(
        corpus, tmp_path, caplog):
    # Without ESC-50 (and 3 s recordings have no quiet stretch), nothing is labelled no_birds:
    # a probe fitted on the species alone would call every window a species.
    _without_the_probe(corpus, tmp_path, caplog, "dataset.esc50_no_bird_ratio=0",
                       warning="none is labelled ['no_birds']")


def test_pretraining_has_no_labels_for_the_probe_and_learns_the_embedding_only(
        corpus, tmp_path, caplog):
    loss_fn = _without_the_probe(corpus, tmp_path, caplog, "training.stage=pretrain",
                                 warning="no labels to fit the linear-probe teacher")
    assert loss_fn.pretrain


def test_the_probe_learns_no_birds_from_every_no_bird_window_of_the_training_split(
        corpus, tmp_path, caplog):
    from datasets.dataset_factory import build_data
    from datasets.unlabelled import unlabelled_key_of, unlabelled_roots
    from distillation.probe_teacher import covered_windows, no_birds_embeddings
    from distillation.training_setup import distillation_loss_factory

    cfg = _probe_config(corpus, tmp_path)
    data = build_data(cfg)
    store = SoftLabelStore(corpus / "soft_labels")
    roots = unlabelled_roots(cfg.dataset.unlabelled_dirs)
    clips = {split: [store.record(unlabelled_key_of(corpus / "esc50" / r.path, roots))["embedding"]
                     for r in data.recordings if r.source == "esc50" and r.split == split]
             for split in ("train", "val", "test")}
    assert all(clips.values())
    no_birds = len(data.class_names) - 1
    sampled = sum(e.label == no_birds for e in data.datasets["train"].examples)
    rows = no_birds_embeddings(cfg, data.recordings, store,
                               float(cfg.dataset.clip_duration))
    # Every window of every training clip (these recordings have no quiet stretch), far more
    # than the student's own no_birds sample...
    np.testing.assert_array_equal(rows, np.concatenate(clips["train"]).astype(np.float32))
    assert len(rows) > sampled
    # ...and nothing from a validation or test clip.
    held_out = {r.tobytes() for r in np.concatenate(clips["val"] + clips["test"]).astype(
        np.float32)}
    assert not any(r.tobytes() in held_out for r in rows)
    # The student's sampled no_birds windows are among them, and the fit counts each window
    # once: its no_birds rows are exactly these.
    train = data.datasets["train"]
    sampled_rows = [store.embedding_for(unlabelled_key_of(corpus / "esc50" / e.path, roots),
                                        e.start_s, float(cfg.dataset.clip_duration))
                    for e in train.examples if e.label == no_birds]
    assert len(sampled_rows) == sampled > 0
    assert covered_windows(np.asarray(sampled_rows), rows).all()
    with caplog.at_level("INFO"):
        distillation_loss_factory(cfg, data)
    assert f"no_birds {len(rows)})" in caplog.text


def test_covered_windows_matches_rows_bit_for_bit():
    from distillation.probe_teacher import covered_windows

    pool = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    rows = np.stack([pool[3], pool[0] + 1e-3, pool[1]])
    np.testing.assert_array_equal(covered_windows(rows, pool), [True, False, True])
    assert covered_windows(np.zeros((0, 8), np.float32), pool).shape == (0,)

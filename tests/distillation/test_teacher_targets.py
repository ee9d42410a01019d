"""Issue 14: richer teacher records, unlabelled audio, embedding distillation, consistent views,
pre-training and fine-tuning. BirdNET runs on a handful of 3 s windows only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from birdnet.teacher import EMBEDDING_DIM, N_OUTPUTS, SAMPLE_RATE, BirdNetTeacher
from datasets.audio_utils import load_audio
from distillation.soft_label_records import read_record, record_path
from distillation.soft_labels import SoftLabelError, SoftLabelStore, extract_soft_labels
from distillation.views import ViewPool, ViewSettings, mix_view, plan_views, read_views
from tests.conftest import REPO_ROOT, tone_burst, write_wav
from tests.training.helpers import compose_config, fast_overrides

SPECIES = ["Bubo bubo", "Apus apus"]
CLASSES = ["Bubo_bubo", "Apus_apus"]
CONFIG_DIR = REPO_ROOT / "distillation" / "configs"


def _clip(seed: int, freq: float, sr: int = 32000, seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 0.01, int(seconds * sr)).astype(np.float32)
    burst = tone_burst(sr, freq, 0.8, 0.4)
    audio[sr // 2 : sr // 2 + len(burst)] += burst
    return audio


@pytest.fixture(scope="module")
def teacher() -> BirdNetTeacher:
    return BirdNetTeacher(num_threads=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two species x 3 one-window recordings (one per split) and an unlabelled folder that
    also holds a renamed copy of a recording."""
    root = tmp_path_factory.mktemp("teacher_targets")
    for s, (species, freq) in enumerate([("Bubo_bubo", 500.0), ("Apus_apus", 6000.0)]):
        for i in range(3):
            write_wav(root / "birds" / species / f"rec{i}.wav", _clip(10 * s + i, freq), 32000)
    noise = np.random.default_rng(99).normal(0, 0.02, 3 * 22050).astype(np.float32)
    write_wav(root / "field" / "night.wav", noise, 22050)
    write_wav(root / "field" / "dawn.wav", _clip(50, 3000.0, 22050), 22050)
    return root


@pytest.fixture(scope="module")
def extracted(corpus, teacher) -> Path:
    """Records with embeddings and all logits, unlabelled files and one view per window."""
    output = corpus / "soft_labels"
    # The copy is made here so that extraction labels it once, under its species folder.
    shutil.copy(corpus / "birds" / "Bubo_bubo" / "rec1.wav", corpus / "field" / "copy.wav")
    extract_soft_labels(SPECIES, output, corpus / "birds", hop=3.0, teacher=teacher,
                        progress=False, unlabelled_dirs=[corpus / "field"],
                        store_all_logits=True, views=1, seed=3, cache_dir=None)
    return output


# ----------------------------------------------------------------------------- records


def test_records_hold_embeddings_and_all_logits_and_say_so(extracted, corpus, teacher):
    metadata = json.loads((extracted / "metadata.json").read_text())
    assert metadata["format_version"] == 2
    assert metadata["stored"] == {"embedding": True, "all_logits": True}
    assert metadata["unlabelled_dirs"] == {"field": str(corpus / "field")}
    assert metadata["views"]["views_per_window"] == 1
    # The copy of a labelled file is labelled once, under its species.
    assert sorted(k for k in metadata["files"] if k.startswith("unlabelled/")) == [
        "unlabelled/field/dawn.wav", "unlabelled/field/night.wav"]
    record = read_record(extracted, "Apus_apus/rec0.wav")
    assert record["embedding"].shape == (1, EMBEDDING_DIM)
    assert record["embedding"].dtype == np.float16
    assert record["all_logits"].shape == (1, N_OUTPUTS)
    assert record["all_logits"].dtype == np.float16
    audio, _ = load_audio(corpus / "birds" / "Apus_apus" / "rec0.wav", SAMPLE_RATE)
    logits, embedding = teacher.logits_and_embeddings(audio[None, : 3 * SAMPLE_RATE])
    np.testing.assert_allclose(record["embedding"].astype(np.float32), embedding,
                               rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(record["all_logits"].astype(np.float32), logits, atol=2e-2)
    store = SoftLabelStore(extracted)
    assert store.stored == {"embedding": True, "all_logits": True}
    assert "all_logits" not in store.record("Apus_apus/rec0.wav")  # left on disk
    assert store.has(corpus / "field" / "night.wav")  # an absolute path maps to its key
    np.testing.assert_array_equal(store.embedding_for("Apus_apus/rec0.wav", 0.0, 3.0),
                                  record["embedding"][0].astype(np.float32))


def test_records_with_embeddings_resume(extracted, corpus, teacher):
    before = {p: p.stat().st_mtime_ns for p in (extracted / "files").rglob("*.npz")}
    views_before = {p: p.stat().st_mtime_ns for p in (extracted / "views").rglob("*.npz")}
    summary = extract_soft_labels(SPECIES, extracted, corpus / "birds", hop=3.0,
                                  teacher=teacher, progress=False,
                                  unlabelled_dirs=[corpus / "field"], store_all_logits=True,
                                  views=1, seed=3, cache_dir=None)
    assert (summary.computed, summary.reused) == (0, 8)
    assert before == {p: p.stat().st_mtime_ns for p in (extracted / "files").rglob("*.npz")}
    assert views_before == {p: p.stat().st_mtime_ns
                            for p in (extracted / "views").rglob("*.npz")}


def test_old_folders_load_and_say_what_they_lack(extracted, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(extracted, old)
    metadata = json.loads((old / "metadata.json").read_text())
    metadata["format_version"] = 1
    for key in ("stored", "views", "unlabelled_dirs"):
        metadata.pop(key)
    (old / "metadata.json").write_text(json.dumps(metadata))
    store = SoftLabelStore(old)
    assert store.stored == {"embedding": False, "all_logits": False}
    assert store.windows("Bubo_bubo/rec0.wav")[1].shape == (1, 2)  # logits still read
    with pytest.raises(SoftLabelError, match="format 1.*extract_soft_labels.py"):
        store.require("embedding", "distillation.embedding_weight > 0")


# ----------------------------------------------------------------------------- views


def test_views_are_reproducible_from_the_seed():
    pool = ViewPool(keys=["a.wav", "b.wav", "c.wav"], durations=np.array([9.0, 9.0, 9.0]),
                    window_file=np.repeat(np.arange(3), 3),
                    window_start=np.tile([0.0, 3.0, 6.0], 3), background=np.array([6, 7]))
    starts = np.array([0.0, 3.0, 6.0])
    first = plan_views("a.wav", starts, 9.0, pool, ViewSettings(views=4, seed=1))
    again = plan_views("a.wav", starts, 9.0, pool, ViewSettings(views=4, seed=1))
    other = plan_views("a.wav", starts, 9.0, pool, ViewSettings(views=4, seed=2))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["partner_start"], other["partner_start"]) or not \
        np.array_equal(first["gain"], other["gain"])
    assert len(first["window"]) == 12
    assert "a.wav" not in set(first["partner_key"])  # a window is mixed with another file
    assert set(first["background_key"]) <= {"", "c.wav"}
    assert np.all((first["anchor_start"] >= 0) & (first["anchor_start"] <= 6.0))


def test_a_view_is_labelled_on_the_mixed_audio(extracted, corpus, teacher):
    store = SoftLabelStore(extracted)
    key = "Bubo_bubo/rec0.wav"
    views = read_views(extracted, key, exclude=())
    assert views is not None and len(views["window"]) == 1
    paths = {k: corpus / "birds" / k for k in store.files if not k.startswith("unlabelled/")}
    paths.update({k: corpus / "field" / Path(k).name for k in store.files
                  if k.startswith("unlabelled/")})

    def audio_of(name: str) -> np.ndarray:
        return load_audio(paths[name], SAMPLE_RATE)[0]

    mix = mix_view(audio_of, SAMPLE_RATE, 3.0, key, views, 0)
    on_mix = teacher.logits(mix[None])
    np.testing.assert_allclose(views["all_logits"].astype(np.float32), on_mix, atol=2e-2)
    columns = store.class_columns(["Bubo_bubo", "Apus_apus"])
    np.testing.assert_allclose(views["target_logits"][0], on_mix[0, teacher.species_indices(
        SPECIES)], atol=1e-4)
    assert columns.tolist() == [0, 1]
    # Not the mix of the parts' outputs: BirdNET is far from linear in its input.
    partner = str(views["partner_key"][0])
    parts = [audio_of(key)[: 3 * SAMPLE_RATE], audio_of(partner)[: 3 * SAMPLE_RATE]]
    part_logits = teacher.logits(np.stack([np.pad(p, (0, 3 * SAMPLE_RATE - len(p)))
                                           for p in parts]))
    weights = np.array([1.0, float(views["partner_gain"][0])])
    mixed_outputs = (weights[:, None] * part_logits).sum(0) / weights.sum()
    assert np.abs(mixed_outputs - on_mix[0]).max() > 0.5
    # The student rebuilds the same mix at its own rate (mixing and resampling are linear).
    student = mix_view(lambda name: load_audio(paths[name], 32000)[0], 32000, 3.0, key,
                       views, 0)
    resampled = load_audio(paths[key], 32000)[0]
    assert student.shape == (96000,) and np.isfinite(student).all()
    assert not np.allclose(student, resampled[:96000])


# ----------------------------------------------------------------------------- training


def _config(corpus: Path, soft_labels: Path, tmp: Path, *extra: str,
            name: str = "embedding_distillation"):
    return compose_config(
        [*fast_overrides(corpus / "birds", tmp, epochs=1), "dataset.esc50_no_bird_ratio=0",
         f"dataset.soft_labels_path={soft_labels}", f"paths.cache_dir={tmp / 'cache'}",
         f"dataset.allowed_bird_classes=[{','.join(CLASSES)}]",
         "dataset.split_ratios=[0.34,0.33,0.33]", "dataset.augmentation.enabled=false",
         *extra],
        config_name=name, config_dir=CONFIG_DIR,
    )


def test_unlabelled_windows_never_reach_validation_or_test(extracted, corpus, tmp_path):
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory

    # A superset: the species folders themselves, plus the field folder with its copy.
    cfg = _config(corpus, extracted, tmp_path,
                  f"dataset.unlabelled_dirs=[{corpus / 'field'},{corpus / 'birds'}]")
    data = build_data(cfg)
    held_out = set(data.manifest.loc[data.manifest["split"] != "train", "path"])
    train = set(data.manifest.loc[data.manifest["split"] == "train", "path"])
    unlabelled = {item.key for item in data.unlabelled}
    assert {"unlabelled/field/night.wav", "unlabelled/field/dawn.wav"} <= unlabelled
    # Every file of the manifest is dropped from the pool, by path or by content (the copy).
    assert not {k for k in unlabelled if k.startswith("unlabelled/birds/")}
    copy_split = data.manifest.set_index("path").loc["Bubo_bubo/rec1.wav", "split"]
    assert ("unlabelled/field/copy.wav" in unlabelled) is False, copy_split
    distillation_loss_factory(cfg, data)
    for split in ("val", "test"):
        dataset = data.datasets[split]
        assert len(dataset) == len(dataset.examples)  # no teacher-only windows
        assert {e.path for e in dataset.examples if e.kind == "call"} <= held_out
        assert not any(e.path.startswith("unlabelled/") for e in dataset.examples)
    teacher_items = data.datasets["train"].teacher.items
    keys = {item.key for item in teacher_items}
    assert {"unlabelled/field/night.wav", "unlabelled/field/dawn.wav"} <= keys
    assert keys - {"unlabelled/field/night.wav", "unlabelled/field/dawn.wav"} <= train
    labels = data.datasets["train"].labels()
    assert labels.count(-1) == len(teacher_items)
    item = data.datasets["train"][len(labels) - 1]
    assert item["label"] == -1 and item["teacher_embedding"].shape == (EMBEDDING_DIM,)


def test_the_teacher_only_loss_ignores_missing_labels_in_ce_and_accuracy():
    from distillation.losses import CrossEntropyLoss
    from distillation.losses.embedding import TeacherTargetsLoss

    logits = torch.randn(4, 3, requires_grad=True)
    batch = {"label": torch.tensor([0, -1, 2, -1]),
             "teacher_logits": torch.randn(4, 3), "has_teacher": torch.ones(4, dtype=bool),
             "student_embedding": torch.randn(4, 8), "teacher_embedding": torch.randn(4, 8),
             "has_embedding": torch.tensor([True, True, False, True])}
    ce_only = TeacherTargetsLoss(CrossEntropyLoss(), alpha=0.0, temperature=1.0)
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 2]))
    torch.testing.assert_close(ce_only(logits, batch), expected)
    with_embedding = TeacherTargetsLoss(CrossEntropyLoss(), alpha=0.0, temperature=1.0,
                                        embedding_weight=2.0)
    cos = torch.nn.functional.cosine_similarity(batch["student_embedding"],
                                                batch["teacher_embedding"])
    torch.testing.assert_close(with_embedding(logits, batch),
                               expected + 2.0 * (1 - cos[[0, 1, 3]]).mean())


def test_embedding_weight_alone_moves_the_student_toward_the_teacher(extracted, corpus,
                                                                     tmp_path):
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory
    from models import build_model

    cfg = _config(corpus, extracted, tmp_path, "loss.type=cross_entropy",
                  "training.stage=pretrain", f"dataset.unlabelled_dirs=[{corpus / 'field'}]",
                  "distillation.view_prob=0")
    data = build_data(cfg)
    loss_fn = distillation_loss_factory(cfg, data)
    assert loss_fn.base is None and loss_fn.embedding_weight == 1.0 and loss_fn.alpha == 0
    train = data.datasets["train"]
    batch = torch.utils.data.default_collate([train[i] for i in range(len(train))])
    torch.manual_seed(0)
    model = build_model("dscnn_gru", n_classes=3, embedding_dim=EMBEDDING_DIM, channels=16,
                        gru_hidden=16, n_blocks=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def cosine() -> float:
        model.eval()
        with torch.no_grad():
            _, embedding = model(batch["audio"], return_embedding=True)
        model.train()
        return float(torch.nn.functional.cosine_similarity(
            embedding, batch["teacher_embedding"]).mean())

    start_cosine, losses = cosine(), []
    for _ in range(25):
        logits, embedding = model(batch["audio"], return_embedding=True)
        loss = loss_fn(logits, {**batch, "student_embedding": embedding})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert cosine() > start_cosine + 0.3


def test_pretrain_then_fine_tune_with_other_classes(extracted, corpus, tmp_path):
    from distillation.training_setup import distillation_loss_factory
    from model_checkpoint import load_checkpoint
    from models import build_model
    from training.pretrain import load_pretrained
    from training.run import model_arguments, run_training

    small = ["+model.channels=16", "+model.gru_hidden=16", "+model.n_blocks=2"]
    pre = _config(corpus, extracted, tmp_path / "pre", *small, name="pretrain_config")
    results = run_training(pre, tmp_path / "pre" / "run", distillation_loss_factory)
    metrics = (tmp_path / "pre" / "run" / "metrics.csv").read_text()
    assert "val_embedding_cosine" in metrics
    backbone = tmp_path / "pre" / "run" / "best_model.pt"
    assert results["class_names"] == [*CLASSES, "no_birds"]
    pretrained, _ = load_checkpoint(backbone)

    fine = _config(corpus, extracted, tmp_path / "fine", *small,
                   "dataset.allowed_bird_classes=[Apus_apus]", f"model.pretrained={backbone}")
    model = build_model("dscnn_gru", **model_arguments(fine, 2))
    info = load_pretrained(model, backbone, "dscnn_gru", ["Apus_apus", "no_birds"],
                           {"sample_rate": 32000, "clip_duration": 3.0})
    assert not info["same_classes"]
    ours, theirs = model.state_dict(), pretrained.state_dict()
    assert all(name.startswith("head.") for name in info["reinitialised"])
    assert info["reinitialised"]
    copied = [name for name in ours if not name.startswith("head.")]
    assert "gru.weight_ih_l0" in copied and "projection.1.weight" in copied
    for name in copied:
        torch.testing.assert_close(ours[name], theirs[name])
    assert ours["head.2.weight"].shape[0] == 2 != theirs["head.2.weight"].shape[0]
    fine_results = run_training(fine, tmp_path / "fine" / "run", distillation_loss_factory)
    assert fine_results["class_names"] == ["Apus_apus", "no_birds"]
    with pytest.raises(Exception, match="dscnn_gru"):
        load_pretrained(build_model("cnn2d", n_classes=2), backbone, "cnn2d",
                        ["Apus_apus", "no_birds"], {"sample_rate": 32000, "clip_duration": 3.0})


def test_the_recipe_trains_without_a_validation_split_and_keeps_its_last_epoch(
        extracted, corpus, tmp_path, caplog):
    from distillation.training_setup import distillation_loss_factory
    from training.run import run_training

    cfg = _config(corpus, extracted, tmp_path, "dataset.split_ratios=[0.67,0,0.33]",
                  "training.monitor=last", "training.epochs=2", "training.patience=1")
    with caplog.at_level("INFO", logger="training.run"):
        results = run_training(cfg, tmp_path / "run", distillation_loss_factory)
    manifest = (tmp_path / "run" / "split_manifest.csv").read_text()
    assert ",val," not in manifest and ",train," in manifest and ",test," in manifest
    # Every epoch runs (patience has nothing to count) and the final one is kept.
    assert results["best_epoch"] == 2
    assert results["test"]["macro_f1"] >= 0
    assert results["epochs_run"] == 2 and results["val"] == {}
    assert "no validation split" in caplog.text


def test_embedding_recipe_needs_embeddings_in_the_soft_labels(extracted, corpus, tmp_path):
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory

    old = tmp_path / "old"
    shutil.copytree(extracted, old)
    metadata = json.loads((old / "metadata.json").read_text())
    metadata["format_version"] = 1
    metadata.pop("stored")
    (old / "metadata.json").write_text(json.dumps(metadata))
    cfg = _config(corpus, old, tmp_path)
    with pytest.raises(SoftLabelError, match="embedding"):
        distillation_loss_factory(cfg, build_data(cfg))
    assert record_path(old, "Bubo_bubo/rec0.wav").is_file()


def test_the_exported_model_leaves_the_projection_head_out(tmp_path):
    from export.onnx_export import export_checkpoint
    from model_checkpoint import save_checkpoint
    from models import build_model

    model = build_model("dscnn_gru", n_classes=3, embedding_dim=EMBEDDING_DIM)
    path = tmp_path / "student.pt"
    save_checkpoint(path, model, model_name="dscnn_gru",
                    model_kwargs={"n_classes": 3, "embedding_dim": EMBEDDING_DIM},
                    class_names=["Bubo_bubo", "Apus_apus", "no_birds"],
                    audio={"sample_rate": 32000, "clip_duration": 3.0})
    export_checkpoint(path, tmp_path / "out", int8=False)
    onnx_bytes = (tmp_path / "out" / "model_fp32.onnx").read_bytes()
    assert b"gru" in onnx_bytes  # weights are named after their modules...
    assert b"projection" not in onnx_bytes  # ...and the ~100k projection weights are absent


def _training_side(corpus: Path, extracted: Path, tmp_path: Path):
    """The run's data with the corpus' field folder as its pool, and its training-side audio."""
    from datasets.dataset_factory import build_data
    from distillation.training_setup import training_side_audio

    cfg = _config(corpus, extracted, tmp_path, f"dataset.unlabelled_dirs=[{corpus / 'field'}]")
    data = build_data(cfg)
    return data, training_side_audio(data)


def test_views_are_drawn_at_training_time_with_their_own_teacher_targets(extracted, corpus,
                                                                         tmp_path):
    from distillation.datasets.teacher_windows import TeacherWindowDataset

    data, sides = _training_side(corpus, extracted, tmp_path)
    store = SoftLabelStore(extracted)
    common = dict(store=store, cache=data.cache, class_names=data.class_names,
                  clip_duration=3.0, embeddings=True)
    always = TeacherWindowDataset(sorted(sides), sides, view_prob=1.0, **common)
    never = TeacherWindowDataset(sorted(sides), sides, view_prob=0.0, **common)
    assert always._usable, "no view of a training-side file borrows only training-side audio"
    for (key, row), usable in always._usable.items():
        views = read_views(extracted, key)
        # Only views whose partner and background are on the training side are drawn.
        assert all(views["partner_key"][v] in sides for v in usable)
        assert all(views["background_key"][v] in ("", *sides) for v in usable)
        index = next(i for i, item in enumerate(always.items) if (item.key, item.row) == (key,
                                                                                       row))
        item, plain = always[index], never[index]
        view = int(usable[0])  # one view per window in this corpus
        np.testing.assert_array_equal(item["teacher_embedding"].numpy(),
                                      views["embedding"][view].astype(np.float32))
        np.testing.assert_array_equal(
            item["teacher_logits"][:2].numpy(), views["target_logits"][view])
        expected = mix_view(lambda k: data.cache.get(sides[k]), 32000, 3.0, key, views, view)
        np.testing.assert_allclose(item["audio"].numpy(), expected)
        assert not np.allclose(item["audio"].numpy(), plain["audio"].numpy())
        assert item["label"] == -1 and plain["label"] == -1


def test_a_drawn_view_takes_the_probes_scores_on_the_mixed_audio(extracted, corpus, tmp_path):
    from distillation.datasets.teacher_windows import TeacherWindowDataset

    data, sides = _training_side(corpus, extracted, tmp_path)
    calls = []

    def probe(embeddings: np.ndarray) -> np.ndarray:
        calls.append(len(embeddings))
        return np.asarray(embeddings, np.float32)[:, :3] * 2.0

    views = TeacherWindowDataset(sorted(sides), sides, SoftLabelStore(extracted), data.cache,
                                 data.class_names, 3.0, embeddings=True, view_prob=1.0,
                                 probe=probe)
    at_init = len(calls)
    (key, row), usable = next(iter(views._usable.items()))
    index = next(i for i, item in enumerate(views.items) if (item.key, item.row) == (key, row))
    view = int(usable[0])
    expected = read_views(extracted, key)["embedding"][view].astype(np.float32)[:3] * 2.0
    np.testing.assert_allclose(views[index]["teacher_logits"].numpy(), expected, rtol=1e-6)
    assert len(calls) == at_init  # scored once per file when built, not once per item


def test_labelled_share_sets_how_often_the_labelled_recordings_are_drawn(extracted, corpus,
                                                                         tmp_path):
    from torch.utils.data import WeightedRandomSampler

    from datasets.dataset_factory import build_data
    from distillation.datasets.soft_label_dataset import soft_label_key
    from distillation.training_setup import add_teacher_windows
    from training.run import make_loaders

    def loaders_for(share: str):
        cfg = _config(corpus, extracted, tmp_path, f"dataset.unlabelled_dirs=[{corpus / 'field'}]",
                      f"distillation.labelled_share={share}")
        data = build_data(cfg)
        teacher = add_teacher_windows(cfg, data, SoftLabelStore(extracted), embeddings=True,
                                      all_windows=True)
        own = {soft_label_key(r.source, r.path) for r in data.recordings if r.split == "train"}
        return make_loaders(cfg, data), data, teacher, own

    uniform, *_ = loaders_for("null")
    assert not isinstance(uniform["train"].sampler, WeightedRandomSampler)

    loaders, data, teacher, own = loaders_for("0.8")
    train = data.datasets["train"]
    n_labelled = len(train.labelled)
    is_own = [i < n_labelled or teacher.items[i - n_labelled].key in own
              for i in range(len(train))]
    assert any(is_own) and not all(is_own)
    sampler = loaders["train"].sampler
    assert isinstance(sampler, WeightedRandomSampler) and len(sampler) == len(train)
    torch.manual_seed(0)
    draws = [i for _ in range(400) for i in sampler]
    share = np.mean([is_own[i] for i in draws])
    assert abs(share - 0.8) < 0.05  # uniform drawing would give the labelled side's own share
    assert abs(np.mean(is_own) - 0.8) > 0.1
    # The validation and test loaders are untouched.
    assert not isinstance(loaders["test"].sampler, WeightedRandomSampler)
    # Draws come from the loader's generator, whose state a checkpoint saves: a resumed run
    # with that state draws the same epoch.
    saved = loaders["train"].generator.get_state()
    epoch = list(sampler)
    resumed, *_ = loaders_for("0.8")
    resumed["train"].generator.set_state(saved)
    assert list(resumed["train"].sampler) == epoch


@pytest.mark.parametrize("share", ["1.5", "0", "abc"])
def test_a_labelled_share_outside_0_1_is_a_config_error(extracted, corpus, tmp_path, share):
    from common.errors import ConfigError
    from training.config_checks import check_training_config

    cfg = _config(corpus, extracted, tmp_path, f"distillation.labelled_share={share}")
    with pytest.raises(ConfigError, match="distillation.labelled_share"):
        check_training_config(cfg)


def _one_training_step(data, loss_fn) -> tuple[torch.Tensor, torch.nn.Module]:
    """The loss of a small student on every training window, back-propagated."""
    from models import build_model

    train = data.datasets["train"]
    batch = torch.utils.data.default_collate([train[i] for i in range(len(train))])
    model = build_model("dscnn_gru", n_classes=3, embedding_dim=EMBEDDING_DIM, channels=16,
                        gru_hidden=16, n_blocks=2)
    out, embedding = model(batch["audio"], return_embedding=True)
    loss = loss_fn(out, {**batch, "student_embedding": embedding})
    loss.backward()
    return loss, model


def test_the_birdnet_logit_term_reads_birdnets_own_output_layer(extracted, corpus, tmp_path):
    """The layer the term uses turns a stored embedding into the stored logits of all 6522
    classes, and the recipe trains one step with it."""
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory

    cfg = _config(corpus, extracted, tmp_path, "distillation.birdnet_logit_weight=0.5",
                  "distillation.view_prob=0")
    data = build_data(cfg)
    loss_fn = distillation_loss_factory(cfg, data)
    assert loss_fn.logit_weight == 0.5 and loss_fn.output_weight.shape == (N_OUTPUTS,
                                                                           EMBEDDING_DIM)
    record = read_record(extracted, "Apus_apus/rec0.wav")
    logits = torch.nn.functional.linear(torch.from_numpy(record["embedding"].astype("float32")),
                                        loss_fn.output_weight, loss_fn.output_bias)
    np.testing.assert_allclose(logits.numpy(), record["all_logits"].astype(np.float32),
                               atol=0.05)
    loss, _ = _one_training_step(data, loss_fn)
    assert torch.isfinite(loss) and float(loss) > 0


@pytest.mark.parametrize("setting", ["distillation.birdnet_logit_weight=-1",
                                     "distillation.birdnet_logit_temperature=0",
                                     "distillation.embedding_contrastive_weight=-1",
                                     "distillation.embedding_contrastive_temperature=0"])
def test_a_bad_embedding_term_setting_is_a_config_error(extracted, corpus, tmp_path, setting):
    from common.errors import ConfigError
    from training.config_checks import check_training_config

    cfg = _config(corpus, extracted, tmp_path, setting)
    with pytest.raises(ConfigError, match=setting.split("=")[0]):
        check_training_config(cfg)


@pytest.mark.parametrize("term", ["birdnet_logit_weight", "embedding_contrastive_weight"])
def test_the_embedding_terms_need_the_projection_head(extracted, corpus, tmp_path, term):
    from common.errors import ConfigError
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory

    cfg = _config(corpus, extracted, tmp_path, "distillation.embedding_weight=0",
                  f"distillation.{term}=1", "model.embedding_dim=0")
    with pytest.raises(ConfigError, match=f"{term}.*model.embedding_dim=1024"):
        distillation_loss_factory(cfg, build_data(cfg))


def test_the_relational_term_trains_a_step_of_the_recipe(extracted, corpus, tmp_path):
    from datasets.dataset_factory import build_data
    from distillation.training_setup import distillation_loss_factory

    cfg = _config(corpus, extracted, tmp_path, "distillation.embedding_weight=0",
                  "distillation.embedding_contrastive_weight=0.5", "distillation.view_prob=0")
    data = build_data(cfg)
    loss_fn = distillation_loss_factory(cfg, data)
    assert loss_fn.contrastive_weight == 0.5 and loss_fn.needs_student_embedding
    loss, model = _one_training_step(data, loss_fn)
    assert torch.isfinite(loss) and float(loss) > 0
    assert model.projection[-1].weight.grad.abs().sum() > 0

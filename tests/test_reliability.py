"""Issue 17: no file touched outside its folder, no bad model saved with exit 0, exact resume.

One test (or a few) per defect of the issue; each fails on the code before the fix.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from common.errors import ConfigError
from common.safe_paths import StorageError, UnsafePathError, path_inside
from tests.conftest import REPO_ROOT, tone_burst, write_wav
from tests.training.helpers import compose_config, fast_overrides
from training.run import run_training

NON_UTF8_NAME = os.fsdecode(b"rec\xff01.wav")  # as an old FAT recorder writes it


# ----------------------------------------------------------------------------- 1. deletion


def _plant_no_birds_manifest(out: Path, files: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"file": files, "source_type": "quiet_segment", "source_path": "x.wav",
                  "offset": 0.0, "split": "train", "category": ""}).to_csv(
        out / "manifest.csv", index=False)


@pytest.mark.parametrize("listed", ["../sec/victim/keep_me.txt", "ABSOLUTE"])
def test_no_birds_rerun_never_deletes_outside_its_folder(tmp_path, listed):
    from datasets.audio_cache import DecodedAudioCache
    from datasets.no_birds import write_no_birds_folder

    victim = tmp_path / "sec" / "victim" / "keep_me.txt"
    victim.parent.mkdir(parents=True)
    victim.write_text("precious")
    out = tmp_path / "out"
    _plant_no_birds_manifest(out, [str(victim) if listed == "ABSOLUTE" else f"../{listed}"])
    with pytest.raises(UnsafePathError, match="stay inside"):
        write_no_birds_folder([], out, DecodedAudioCache(None, 32000), 3.0, {})
    assert victim.read_text() == "precious"


def test_no_birds_rerun_removes_only_its_own_samples(tmp_path):
    from datasets.audio_cache import DecodedAudioCache
    from datasets.no_birds import write_no_birds_folder

    out = tmp_path / "out"
    _plant_no_birds_manifest(out, ["notes.txt", "quiet__a__b__0001000ms.wav"])
    (out / "notes.txt").write_text("the user's own file, listed by a hand-edited manifest")
    write_wav(out / "quiet__a__b__0001000ms.wav", np.zeros(100, np.float32), 32000)
    write_no_birds_folder([], out, DecodedAudioCache(None, 32000), 3.0, {})
    assert (out / "notes.txt").is_file()
    assert not (out / "quiet__a__b__0001000ms.wav").exists()


# ----------------------------------------------------------------------------- 2. reads


def test_path_rule():
    assert path_inside("root", "Bubo_bubo/a.wav", "x") == Path("root/Bubo_bubo/a.wav")
    for bad in ["../x.wav", "a/../../x.wav", "/etc/passwd", "", "C:\\x.wav", "..\\x.wav"]:
        with pytest.raises(UnsafePathError):
            path_inside("root", bad, "x")


def test_split_manifest_cannot_point_outside_the_data(demo_corpus, tmp_path):
    outside = write_wav(tmp_path / "outside.wav", tone_burst(32000, 2000, 4.0), 32000)
    rows = [{"path": os.path.relpath(outside, demo_corpus.bird_dir), "label": "Bubo_bubo",
             "group": "g", "split": split, "source": "bird"} for split in ("train", "val", "test")]
    manifest = tmp_path / "crafted.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    cfg = compose_config([*fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=1),
                          f"dataset.split_manifest={manifest}"])
    with pytest.raises(UnsafePathError, match="outside.wav"):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "cache").exists()  # nothing was opened or decoded


def test_checkpoint_manifest_cannot_point_outside_the_data(tmp_path):
    from export.calibration_windows import split_windows
    from model_checkpoint import AudioSettings, Checkpoint

    write_wav(tmp_path / "outside.wav", tone_burst(32000, 2000, 4.0), 32000)
    (tmp_path / "birds").mkdir()
    checkpoint = Checkpoint(
        model_name="dscnn_gru", model_kwargs={}, state_dict={},
        class_names=["Bubo_bubo", "no_birds"], audio=AudioSettings(32000, 3.0),
        config={"dataset": {"bird_data_dir": str(tmp_path / "birds")}},
        split_manifest=[{"path": "../outside.wav", "label": "Bubo_bubo", "group": "g",
                         "split": "train", "source": "bird"}],
    )
    with pytest.raises(UnsafePathError, match="outside.wav"):
        split_windows(checkpoint, "train", purpose="calibration")


@pytest.mark.parametrize("listed", ["../outside/attacker.onnx", "ABSOLUTE"])
def test_model_json_cannot_load_a_model_outside_its_folder(tmp_path, listed):
    from edge.errors import EdgeError
    from edge.runtime import load_classifier
    from edge.sidecar import ModelInfo, write_sidecar

    attacker = tmp_path / "outside" / "attacker.onnx"
    attacker.parent.mkdir()
    attacker.write_bytes(b"not a model")
    model_dir = tmp_path / "exported"
    info = ModelInfo(["Bubo_bubo", "no_birds"], 32000, 3.0, 1.0, {"Bubo_bubo": 0.5},
                     files={"int8": str(attacker) if listed == "ABSOLUTE" else listed})
    write_sidecar(info, model_dir)
    with pytest.raises(EdgeError, match="stay inside"):
        load_classifier(model_dir)


# ----------------------------------------------------------------------------- 3. names


def _corpus_copy(demo_corpus, tmp_path) -> Path:
    bird_dir = tmp_path / "birds"
    shutil.copytree(demo_corpus.bird_dir, bird_dir)
    return bird_dir


def test_training_accepts_a_file_name_that_is_not_utf8(demo_corpus, tmp_path):
    bird_dir = _corpus_copy(demo_corpus, tmp_path)
    first = sorted((bird_dir / "Bubo_bubo").glob("*.*"))[0]
    first.rename(first.with_name(NON_UTF8_NAME))
    run_training(compose_config(fast_overrides(bird_dir, tmp_path, epochs=1)), tmp_path / "run")
    assert b"rec\xff01" not in (tmp_path / "run" / "skipped_files.csv").read_bytes()
    raw = (tmp_path / "run" / "split_manifest.csv").read_bytes()
    assert b"rec\xff01.wav" in raw  # the name's own bytes, usable by any later stage
    from datasets.split_manifest import load_manifest

    assert f"Bubo_bubo/{NON_UTF8_NAME}" in set(load_manifest(tmp_path / "run" /
                                                             "split_manifest.csv")["path"])


def test_predict_accepts_a_file_name_that_is_not_utf8(demo_checkpoint, tmp_path):
    from edge.predict import main

    folder = tmp_path / "recordings"
    folder.mkdir()
    sf.write(os.fsencode(folder / NON_UTF8_NAME), tone_burst(32000, 3000, 4.0), 32000)
    (folder / os.fsdecode(b"bad\xfe.mp3")).write_bytes(b"not audio at all" * 20)
    out = tmp_path / "out"
    assert main(["--model", str(demo_checkpoint), "--input", str(folder),
                 "--out", str(out)]) == 0
    skipped = (out / "skipped_files.csv").read_bytes()
    assert b"bad\xfe.mp3" in skipped and b"rec\xff01" not in skipped
    assert (out / "detections.csv").is_file()
    assert (out / "combined.selection.table.txt").is_file()


def test_a_tiny_mp3_is_reported_as_undecodable_not_missing(tmp_path):
    from datasets.audio_utils import AudioLoadError, load_audio

    tiny = tmp_path / "tiny.mp3"
    tiny.write_bytes(b"ID3\x03" + bytes(296))
    with pytest.raises(AudioLoadError) as error:
        load_audio(tiny)
    assert "cannot decode" in str(error.value) and "does not exist" not in str(error.value)


# ----------------------------------------------------------------------------- 4-5. config

BAD_CONFIGS = {
    "dataset.allowed_bird_classes=[Bubo_bubo,Not_a_bird]": "Not_a_bird",
    "training.epochs=0": "training.epochs",
    "training.epochs=-1": "training.epochs",
    "training.epochs=abc": "training.epochs",
    "training.batch_size=0": "training.batch_size",
    "dataset.split_ratios=[1,0,0]": "split_ratios",
    "dataset.split_ratios=[0.5,0.5,0.5]": "split_ratios",
    "dataset.split_ratios=[0.8,0,0.2]": "monitor=last",
    "optimizer.lr=abc": "optimizer.lr",
    "optimizer.lr=-0.1": "optimizer.lr",
    "model.name=resnet999": "resnet999",
    "training.monitor=val_f1": "training.monitor",
    "dataset.target_sr=0": "dataset.target_sr",
    "training.patience=-1": "training.patience",
    "training.batch_size=abc": "training.batch_size",
    "dataset.clip_duration=0": "dataset.clip_duration",
    "dataset.num_workers=-2": "dataset.num_workers",
    "dataset.esc50_no_bird_ratio=1.5": "esc50_no_bird_ratio",
    "dataset.augmentation.speed_perturb=-0.1": "speed_perturb",
    "dataset.split_ratios=[0.7,0.3]": "split_ratios",
    "training.scheduler=linear": "training.scheduler",
    "training.monitor=last training.scheduler=plateau": "training.scheduler=plateau",
    "optimizer.type=SGD": "optimizer.type",
    "training.device=gpu": "training.device",
    "seed=1.5": "seed",
    "dataset.allowed_bird_classes=[]": "empty",
    "dataset.allowed_bird_classes=[Bubo_bubo,Bubo_bubo]": "more than once",
}


@pytest.mark.parametrize("override", sorted(BAD_CONFIGS))
def test_bad_config_fails_before_any_audio_work(demo_corpus, tmp_path, override):
    save_path = tmp_path / "best_copy.pt"
    save_path.write_bytes(b"an earlier good model")
    cfg = compose_config([*fast_overrides(demo_corpus.bird_dir, tmp_path), *override.split()])
    with pytest.raises(ConfigError, match=BAD_CONFIGS[override].replace("[", r"\[")):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "cache").exists()  # no audio was prepared
    assert save_path.read_bytes() == b"an earlier good model"


def test_bad_config_cli_exit_2_one_message(demo_corpus, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", f"dataset.bird_data_dir={demo_corpus.bird_dir}",
         "training.epochs=abc", "model.name=resnet999", f"paths.log_dir={tmp_path / 'logs'}",
         f"dataset.cache_dir={tmp_path / 'cache'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "training.epochs" in result.stderr and "resnet999" in result.stderr


def test_species_whose_files_are_all_unusable_saves_no_model(demo_corpus, tmp_path):
    bird_dir = _corpus_copy(demo_corpus, tmp_path)
    for path in (bird_dir / "Apus_apus").iterdir():
        path.write_bytes(b"")
    save_path = tmp_path / "best_copy.pt"
    save_path.write_bytes(b"an earlier good model")
    from datasets.split_manifest import DatasetError

    with pytest.raises(DatasetError, match="Apus_apus"):
        run_training(compose_config(fast_overrides(bird_dir, tmp_path)), tmp_path / "run")
    assert save_path.read_bytes() == b"an earlier good model"


def test_unreadable_species_folder_is_a_config_error(demo_corpus, tmp_path, monkeypatch):
    import training.config_checks as checks

    bird_dir = _corpus_copy(demo_corpus, tmp_path)
    (bird_dir / "Apus_apus").chmod(0)
    if os.geteuid() == 0:  # root reads any folder: let the check see what a user would
        locked = str(bird_dir / "Apus_apus")
        real_access = os.access
        monkeypatch.setattr(checks.os, "access",
                            lambda p, mode: str(p) != locked and real_access(p, mode))
    try:
        with pytest.raises(ConfigError, match="permission"):
            run_training(compose_config(fast_overrides(bird_dir, tmp_path)), tmp_path / "run")
    finally:
        (bird_dir / "Apus_apus").chmod(0o755)
    assert not (tmp_path / "cache").exists()


def test_generate_no_birds_accepts_a_comma_in_bird_dir(demo_corpus, tmp_path):
    bird_dir = tmp_path / "birds,2024"
    shutil.copytree(demo_corpus.bird_dir, bird_dir)
    result = subprocess.run(
        [sys.executable, "generate_no_birds_samples.py", "--bird_dir", str(bird_dir),
         "--esc50_ratio", "0", "--num_samples", "3", "--output_dir", str(tmp_path / "out"),
         "--species", "Bubo_bubo", "--cache_dir", str(tmp_path / "cache")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "out" / "manifest.csv")) == 3


# ----------------------------------------------------------------------------- 6. storage


def _limit_file_size() -> None:
    # Every file this process writes is capped at 200 KB: a decoded recording (~1 MB) cannot
    # be cached, as on a full disk; the signal would otherwise kill the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_full_disk_is_reported_as_such_and_stops(demo_corpus, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", f"dataset.bird_data_dir={demo_corpus.bird_dir}",
         "training.epochs=1", "dataset.num_workers=0", f"paths.log_dir={tmp_path / 'logs'}",
         f"dataset.cache_dir={tmp_path / 'cache'}", f"training.save_path={tmp_path / 'm.pt'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "cannot write" in result.stderr and "cache" in result.stderr
    assert "cannot read file" not in result.stderr  # the recordings are not blamed
    assert not (tmp_path / "m.pt").exists()


def test_short_write_is_a_storage_error(tmp_path):
    from common.file_io import write_atomic

    def writer(handle):
        raise OSError("192000 requested and 137184 written")  # numpy's message, no errno

    with pytest.raises(StorageError, match="cannot write"):
        write_atomic(tmp_path / "x.npy", writer)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# ----------------------------------------------------------------------------- 7. resume


def test_resume_after_a_crash_is_identical_to_an_uninterrupted_run(demo_corpus, tmp_path,
                                                                     monkeypatch, caplog):
    from training.trainer import Trainer

    caplog.set_level(logging.INFO)  # as under Hydra, so the resume notice reaches train.log

    def overrides(name: str) -> list[str]:
        return [*fast_overrides(demo_corpus.bird_dir, tmp_path / name, epochs=2),
                f"dataset.cache_dir={tmp_path / 'cache'}", "debug.files_limit=12",
                "training.batch_size=4"]

    whole = run_training(compose_config(overrides("whole")), tmp_path / "whole")

    original = Trainer.train_epoch

    def crash_in_epoch_2(self, loader, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(self, loader, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_epoch_2)
    crashed_dir = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        run_training(compose_config(overrides("crashed")), crashed_dir)
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = run_training(
        compose_config([*overrides("crashed"), f"training.resume={crashed_dir}"]),
        tmp_path / "new_folder",
    )
    expected = pd.read_csv(tmp_path / "whole" / "metrics.csv")
    got = pd.read_csv(crashed_dir / "metrics.csv")
    columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_macro_f1"]
    pd.testing.assert_frame_equal(got[columns], expected[columns])
    assert resumed["test"]["confusion_matrix"] == whole["test"]["confusion_matrix"]
    assert resumed["macro_f1"] == whole["macro_f1"]
    assert not (tmp_path / "new_folder" / "results.json").exists()
    assert "Resum" in (crashed_dir / "train.log").read_text()


def test_resume_with_another_model_is_a_config_error(demo_corpus, tmp_path):
    run_dir = tmp_path / "interrupted"
    run_dir.mkdir()
    # What an interrupted dscnn_gru run leaves; the check happens before any audio work.
    torch.save({"completed": False, "model_name": "dscnn_gru", "model_kwargs": {}},
               run_dir / "last_state.pt")
    cfg = compose_config([*fast_overrides(demo_corpus.bird_dir, tmp_path, epochs=2),
                          f"training.resume={run_dir}", "model=cnn2d"])
    with pytest.raises(ConfigError, match="model.name=dscnn_gru.*cnn2d"):
        run_training(cfg, tmp_path / "elsewhere")
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- 8. smaller


def test_every_ignored_path_is_listed_with_its_reason(tmp_path):
    from datasets.split_manifest import scan_species_folders

    species = tmp_path / "birds" / "Bubo_bubo"
    write_wav(species / "good.wav", tone_burst(32000, 2000, 1.0), 32000)
    (species / "folder.wav").mkdir()
    (species / "loop").symlink_to(species)
    (species / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    (species / "notes.txt").write_text("x")
    skipped = []
    files = scan_species_folders(tmp_path / "birds", ["Bubo_bubo"], skipped)
    assert [f.path for f in files] == ["Bubo_bubo/good.wav"]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert "folder named like an audio file" in reasons["folder.wav"]
    assert "loop" in reasons["loop"]
    assert "broken" in reasons["dangling.wav"]
    assert "not an audio file" in reasons["notes.txt"]
    assert len(skipped) == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_sub_folder_is_listed(tmp_path):
    from datasets.file_scan import scan_audio_tree

    locked = tmp_path / "in" / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0)
    reported = []
    try:
        scan_audio_tree(tmp_path / "in", lambda p, r: reported.append((p.name, r)))
    finally:
        locked.chmod(0o755)
    assert reported and reported[0][0] == "locked" and "cannot read" in reported[0][1]


def test_killed_predict_keeps_its_tables_and_resumes(demo_checkpoint, tmp_path, monkeypatch):
    import edge.predict as predict

    folder = tmp_path / "recordings"
    for i, freq in enumerate((1500, 3000, 4500)):
        write_wav(folder / f"r{i}.wav", tone_burst(32000, freq, 7.0), 32000)
    whole = predict.run_prediction(demo_checkpoint, folder, tmp_path / "whole")

    original, calls = predict.analyse_file, []

    def killed_at_the_third_file(classifier, path, *args, **kwargs):
        calls.append(path.name)
        if path.name == "r2.wav" and len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return original(classifier, path, *args, **kwargs)

    monkeypatch.setattr(predict, "analyse_file", killed_at_the_third_file)
    monkeypatch.setattr(predict, "TABLE_FLUSH_S", 0.0)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict.run_prediction(demo_checkpoint, folder, out)
    partial = pd.read_csv(out / "detections.csv")
    assert set(partial["file"]) <= {"r0.wav", "r1.wav"}
    assert (out / "combined.selection.table.txt").is_file()
    resumed = predict.run_prediction(demo_checkpoint, folder, out)
    assert calls == ["r0.wav", "r1.wav", "r2.wav", "r2.wav"]  # only the missing file again
    assert len(resumed.files) == len(whole.files) == 3
    pd.testing.assert_frame_equal(pd.read_csv(out / "detections.csv"),
                                  pd.read_csv(tmp_path / "whole" / "detections.csv"))
    assert ((out / "combined.selection.table.txt").read_text()
            == (tmp_path / "whole" / "combined.selection.table.txt").read_text())


def test_an_unusable_file_does_not_shift_the_split(demo_corpus, tmp_path):
    from datasets.dataset_factory import build_data

    clean = _corpus_copy(demo_corpus, tmp_path / "clean")
    dirty = _corpus_copy(demo_corpus, tmp_path / "dirty")
    for name in ("Apus_apus", "Bubo_bubo"):
        (dirty / name / "broken_0.wav").write_bytes(b"RIFF" + bytes(40))

    def manifest_of(bird_dir):
        cfg = compose_config([*fast_overrides(bird_dir, tmp_path, epochs=1),
                              "dataset.esc50_no_bird_ratio=0"])
        data = build_data(cfg)
        return data.manifest.sort_values("path").reset_index(drop=True), data.skipped

    expected, _ = manifest_of(clean)
    got, skipped = manifest_of(dirty)
    assert sum("broken_0.wav" in s.path for s in skipped) == 2
    pd.testing.assert_frame_equal(got, expected)


def test_distillation_species_unknown_to_birdnet_is_a_config_error(tmp_path):
    folder = tmp_path / "birds" / "Birdus_inventus"
    write_wav(folder / "a.wav", tone_burst(32000, 2000, 4.0), 32000)
    (tmp_path / "soft").mkdir()
    cfg = compose_config(
        [*fast_overrides(tmp_path / "birds", tmp_path),
         "dataset.allowed_bird_classes=[Birdus_inventus]",
         f"dataset.soft_labels_path={tmp_path / 'soft'}"],
        config_name="distillation_config", config_dir=REPO_ROOT / "distillation" / "configs")
    from distillation.training_setup import distillation_loss_factory

    with pytest.raises(ConfigError, match="Birdus"):
        run_training(cfg, tmp_path / "run", distillation_loss_factory)
    assert not (tmp_path / "cache").exists()


def _odd_folder(root: Path) -> None:
    """One good recording beside entries a scan must list: text, a folder named like audio,
    a broken link."""
    write_wav(root / "good.wav", tone_burst(16000, 2000.0, 1.0), 16000)
    (root / "notes.txt").write_text("not audio")
    (root / "folder.wav").mkdir()
    (root / "gone.wav").symlink_to(root / "missing.wav")


def test_held_out_benchmark_folder_lists_what_it_ignores(tmp_path):
    from omegaconf import OmegaConf

    from benchmark.discovery import held_out_ground_truth

    audio_dir, no_birds = tmp_path / "held_out", tmp_path / "no_birds"
    _odd_folder(audio_dir / "A_a")
    _odd_folder(no_birds)
    (audio_dir / "stray.wav").write_bytes(b"")
    cfg = OmegaConf.create({"benchmark": {"paths": {"audio_dir": str(audio_dir),
                                                    "no_birds_dir": str(no_birds)}}})
    skipped = []
    truth = held_out_ground_truth(["A_a", "no_birds"], cfg, skipped)
    assert sorted(Path(f).name for f in truth["file"]) == ["good.wav", "good.wav"]
    listed = sorted(Path(s.path).relative_to(tmp_path).as_posix() for s in skipped)
    assert listed == ["held_out/A_a/folder.wav", "held_out/A_a/gone.wav",
                      "held_out/A_a/notes.txt", "held_out/stray.wav", "no_birds/folder.wav",
                      "no_birds/gone.wav", "no_birds/notes.txt"]


def test_soft_label_no_birds_folder_lists_what_it_ignores(tmp_path):
    from distillation.soft_labels import collect_tasks

    no_birds = tmp_path / "no_birds"
    _odd_folder(no_birds)
    skipped = []
    tasks = collect_tasks([], tmp_path / "birds", no_birds, None, skipped)
    assert [Path(task.path).name for task in tasks] == ["good.wav"]
    assert sorted(Path(s.path).name for s in skipped) == ["folder.wav", "gone.wav", "notes.txt"]

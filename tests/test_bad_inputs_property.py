"""Property-style: a few hundred generated bad inputs through train.py, extract_soft_labels.py
and predict.py in one run. Whatever the mix of broken content, odd names, rates and channels:
no crash, every bad input listed exactly once with a reason, every good file used."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from tests.conftest import REPO_ROOT

SPECIES = ("Bubo_bubo", "Apus_apus")

# Names a recorder, a phone or a careless copy produce; the byte strings are not UTF-8.
ODD_NAMES = [
    "plain", "with space", "comma,name", "semi;colon", "quote'single", 'quote"double',
    "dash-leading", "hash#name", "percent%20", "accent_éàü", "kanji_鳥の声", "emoji_🐦",
    b"latin1_caf\xe9", b"fat_\xff\xfe", "tab\tname", "x" * 180, "dots...name", "UPPER.CASE",
]


def _name(base: str | bytes, index: int, ext: str) -> str:
    text = os.fsdecode(base) if isinstance(base, bytes) else base
    return f"{text}_{index:03d}{ext}"


def _encoded(audio: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _calls(rng: np.random.Generator, sr: int, seconds: float, channels: int) -> np.ndarray:
    """Noise with a few tonal bursts, so call detection finds windows at any rate."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    audio = 0.01 * rng.standard_normal(n)
    for start in rng.uniform(0.2, seconds - 0.8, size=3):
        burst = (t >= start) & (t < start + 0.5)
        audio[burst] += 0.4 * np.sin(2 * np.pi * rng.uniform(1500, 3500) * t[burst])
    audio = audio.astype(np.float32)
    return audio if channels == 1 else np.stack([audio * (1 - 0.1 * c)
                                                 for c in range(channels)], axis=1)


def _bad_contents(rng: np.random.Generator) -> dict[str, tuple[str, bytes]]:
    """kind -> (extension, bytes): content no decoder can use as >= 0.1 s of finite audio."""
    good_wav = _encoded(_calls(rng, 8000, 2.0, 1), 8000, "WAV", "PCM_16")
    nan = np.zeros(8000, np.float32)
    nan[100] = np.nan
    inf = np.zeros(8000, np.float32)
    inf[5] = np.inf
    return {
        "empty": (".wav", b""),
        "random": (".mp3", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()),
        "text": (".flac", b"field notes, not audio\n" * 40),
        "json": (".ogg", json.dumps({"not": "audio"}).encode()),
        "png": (".wav", b"\x89PNG\r\n\x1a\n" + bytes(500)),
        "header_only": (".wav", good_wav[:44]),
        "truncated_wav": (".wav", good_wav[:44 + 120]),
        "truncated_flac": (".flac", _encoded(_calls(rng, 22050, 2.0, 1), 22050, "FLAC")[:60]),
        "truncated_ogg": (".ogg", _encoded(_calls(rng, 22050, 2.0, 1), 22050, "OGG")[:90]),
        "tiny_mp3": (".mp3", b"ID3\x03" + bytes(296)),
        "nan": (".wav", _encoded(nan, 8000, "WAV", "FLOAT")),
        "inf": (".wav", _encoded(inf, 8000, "WAV", "FLOAT")),
        "very_short": (".wav", _encoded(np.ones(300, np.float32) * 0.1, 8000, "WAV")),
    }


def _make_corpus(root: Path) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(17)
    good, bad = [], []
    # Good files: odd rates, channel counts and formats, each with a distinct odd name.
    formats = [(".wav", "WAV", "PCM_16"), (".flac", "FLAC", None), (".ogg", "OGG", None),
               (".wav", "WAV", "FLOAT"), (".mp3", "WAV", "PCM_16")]  # WAV data named .mp3
    rates = [8000, 11025, 22050, 44100, 48000, 96000]
    for s, species in enumerate(SPECIES):
        folder = root / species
        folder.mkdir(parents=True)
        for i in range(5):
            ext, fmt, subtype = formats[(i + s) % len(formats)]
            sr, channels = rates[(i + 2 * s) % len(rates)], (1, 2, 6)[(i + s) % 3]
            path = folder / _name(ODD_NAMES[(3 * i + s) % len(ODD_NAMES)], 900 + i, ext)
            path.write_bytes(_encoded(_calls(rng, sr, 4.0, channels), sr, fmt, subtype))
            good.append(path)
    # Bad files: every kind of broken content under every odd name, spread over the species.
    index = 0
    for ext, content in _bad_contents(rng).values():
        for base in ODD_NAMES:
            path = root / SPECIES[index % 2] / _name(base, index, ext)
            path.write_bytes(content)
            bad.append(path)
            index += 1
    # Entries that are not files: a folder named like audio, dangling and looping links.
    for i, species in enumerate(SPECIES):
        (root / species / f"folder_{i}.wav").mkdir()
        (root / species / f"dangling_{i}.wav").symlink_to(root / "nowhere.wav")
        (root / species / f"loop_{i}").symlink_to(root / species)
        (root / species / f"readme_{i}.txt").write_text("notes")
        bad += [root / species / f"folder_{i}.wav", root / species / f"dangling_{i}.wav",
                root / species / f"loop_{i}", root / species / f"readme_{i}.txt"]
    return good, bad


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                            timeout=600, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return result


def _listed_once(listed: list[str], expected: list[Path], what: str) -> None:
    counts = pd.Series([os.path.normpath(p) for p in listed]).value_counts()
    for path in expected:
        assert counts.get(os.path.normpath(str(path)), 0) == 1, f"{what}: {path!r} not listed once"


def test_hundreds_of_bad_inputs_through_every_stage(tmp_path):
    birds = tmp_path / "birds"
    good, bad = _make_corpus(birds)
    assert len(bad) >= 200 and len(good) == 10

    # --- train.py
    model = tmp_path / "model.pt"
    _run(["train.py", f"dataset.bird_data_dir={birds}",
          f"dataset.allowed_bird_classes=[{','.join(SPECIES)}]", "training.epochs=1",
          "dataset.num_workers=0", "dataset.esc50_no_bird_ratio=0", "training.batch_size=8",
          f"dataset.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'logs'}",
          "hydra.run.dir=" + str(tmp_path / "run"), f"training.save_path={model}"], tmp_path)
    from common.file_io import read_table

    skipped = read_table(tmp_path / "run" / "skipped_files.csv")
    _listed_once(list(skipped["path"]), bad, "train.py skipped_files.csv")
    assert len(skipped) == len(bad)
    manifest = read_table(tmp_path / "run" / "split_manifest.csv")
    used = {os.path.normpath(str(birds / p)) for p in manifest["path"]}
    assert used == {os.path.normpath(str(p)) for p in good}  # every good file, nothing else

    # --- extract_soft_labels.py (BirdNET on the good files only: ~40 windows)
    species_list = tmp_path / "species.txt"
    species_list.write_text("\n".join(s.replace("_", " ") for s in SPECIES) + "\n")
    soft = tmp_path / "soft"
    _run(["extract_soft_labels.py", "--species_list", str(species_list), "--bird_dir",
          str(birds), "--output_path", str(soft), "--no_birds_dir", str(tmp_path / "none"),
          "--hop", "3.0", "--no_progress"], tmp_path)
    metadata = json.loads((soft / "metadata.json").read_text())
    listed = [str(birds / f["path"]) for f in metadata["failed_files"]]
    listed += [s["path"] for s in metadata["skipped"]]
    _listed_once(listed, bad, "extract_soft_labels.py metadata.json")
    assert len(listed) == len(bad)
    assert {os.path.normpath(str(birds / key)) for key in metadata["files"]} == \
        {os.path.normpath(str(p)) for p in good}

    # --- predict.py on the whole tree
    out = tmp_path / "predicted"
    _run(["predict.py", "--model", str(model), "--input", str(birds), "--out", str(out)],
         tmp_path)
    skipped = read_table(out / "skipped_files.csv")
    _listed_once(list(skipped["path"]), bad, "predict.py skipped_files.csv")
    assert len(skipped) == len(bad)
    lines = (out / "predict_progress.jsonl").read_text(encoding="utf-8").splitlines()[1:]
    analysed = {os.path.normpath(str(birds / json.loads(line)["name"])) for line in lines}
    assert analysed == {os.path.normpath(str(p)) for p in good}

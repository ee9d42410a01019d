"""The device install (edge/README.md): a fresh virtual environment with only
requirements-edge.txt and this project installed without dependencies runs the `predict`
command on an exported demo model, and never imports a training library."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
# The device venv is kept between runs (keyed by the edge requirements and this Python), so
# only the first run downloads numpy, soundfile, soxr, onnxruntime and tqdm.
VENV_CACHE = REPO / ".cache" / "device_venv"
TRAINING_LIBRARIES = ("torch", "librosa", "hydra", "sklearn", "scipy", "pandas", "omegaconf")
# Everything a wheel of the project needs; run outputs and caches stay out.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".cache", "logs", "outputs", "demo_data",
                                    "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".ruff_cache", "tests", "exported", "multirun")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(command: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                            timeout=900)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{what} failed:\n{output}"
    return result


@pytest.fixture(scope="session")
def device_venv(tmp_path_factory) -> Path:
    requirements = REPO / "requirements-edge.txt"
    key = hashlib.sha1(requirements.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = VENV_CACHE / key
    python = venv / "bin" / "python"
    if not (venv / ".complete").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        # --without-pip + ensurepip would be slower; the stdlib venv brings pip.
        _run([sys.executable, "-m", "venv", str(venv)], REPO, "creating the device venv")
        _run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], REPO,
             "installing requirements-edge.txt (needs PyPI or a pip cache)")
        (venv / ".complete").write_text("ok\n")
    # This project's current code, built as a wheel from a copy of the sources (the build
    # must not write into the repository), installed without dependencies.
    source = tmp_path_factory.mktemp("device_src") / "project"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    wheels = tmp_path_factory.mktemp("device_wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(wheels), str(source)], source, "building the project wheel")
    wheel = next(wheels.glob("*.whl"))
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
          str(wheel)], wheels, "installing the project wheel")
    return venv


def test_device_venv_has_no_training_library(device_venv, tmp_path):
    probe = (f"import importlib.util, json; print(json.dumps([m for m in {TRAINING_LIBRARIES!r} "
             "if importlib.util.find_spec(m) is not None]))")
    found = _run([str(device_venv / "bin" / "python"), "-c", probe], tmp_path, "probe")
    assert json.loads(found.stdout) == []


def test_predict_command_runs_on_an_exported_model(device_venv, exported_dir, demo_corpus,
                                                   tmp_path):
    recordings = tmp_path / "recordings"
    species = sorted(p for p in demo_corpus.bird_dir.iterdir() if p.is_dir())[0]
    shutil.copytree(species, recordings)
    (recordings / "notes.txt").write_text("not audio")
    out = tmp_path / "results"
    # The console script itself, as a user on the device runs it.
    _run([str(device_venv / "bin" / "predict"), "--model", str(exported_dir), "--input",
          str(recordings), "--out", str(out)], tmp_path, "predict")
    detections = pd.read_csv(out / "detections.csv")
    assert set(detections["species"]) <= set(json.loads(
        (exported_dir / "model.json").read_text())["class_names"])
    assert len(detections) > 0
    skipped = pd.read_csv(out / "skipped_files.csv")
    assert list(skipped["path"].map(lambda p: Path(p).name)) == ["notes.txt"]
    assert list(out.glob("*.selection.table.txt"))

    # The same run in-process, to list every module it imported.
    script = (
        "import json, sys\n"
        "from edge.predict import main\n"
        f"code = main(['--model', {str(exported_dir)!r}, '--input', {str(recordings)!r}, "
        f"'--out', {str(tmp_path / 'again')!r}])\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({TRAINING_LIBRARIES!r}))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    result = _run([str(device_venv / "bin" / "python"), "-c", script], tmp_path, "predict")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}

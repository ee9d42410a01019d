"""The Docker scripts, checked without a Docker engine: a stub `docker` records its arguments."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = ["run_docker_training.sh", "run_docker_distillation.sh", "run_docker_soft_labels.sh",
           "run_docker_benchmark.sh"]


@pytest.fixture
def stub_docker(tmp_path):
    """A `docker` on PATH that writes each argument on its own line and exits 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker_args.txt"
    stub = bin_dir / "docker"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{record}"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, record


def run(script, *args, env):
    return subprocess.run(["bash", str(REPO_ROOT / script), *args], capture_output=True,
                          text=True, env=env, timeout=30)


@pytest.mark.parametrize("script", [*SCRIPTS, "docker/common.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(REPO_ROOT / script)]).returncode == 0


def _mounts(argv):
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]


def test_training_gpu_and_overrides(stub_docker):
    env, record = stub_docker
    result = run("run_docker_training.sh", "my_training", "GPU_ID=2", "training.epochs=50",
                 "optimizer.lr=0.001", env=env)
    assert result.returncode == 0, result.stderr
    argv = record.read_text().splitlines()
    assert argv[:4] == ["run", "--rm", "--name", "my_training"]
    assert argv[argv.index("--gpus") + 1] == '"device=2"'
    assert f"{REPO_ROOT}:/app" in _mounts(argv)
    image = argv.index("bird_classification_edge")
    assert argv[image + 1:] == ["python", "train.py", "training.epochs=50", "optimizer.lr=0.001"]
    assert argv[argv.index("-w") + 1] == "/app"


def test_mac_is_cpu_only_and_swallows_nothing(stub_docker):
    env, record = stub_docker
    result = run("run_docker_distillation.sh", "test_instant", "MAC",
                 "--config-name=manual_weights_quick", env=env)
    assert result.returncode == 0, result.stderr
    argv = record.read_text().splitlines()
    assert "--gpus" not in argv
    assert argv[-3:] == ["python", "train_distillation.py", "--config-name=manual_weights_quick"]


def test_override_is_never_taken_for_a_config_name(stub_docker):
    env, record = stub_docker
    run("run_docker_soft_labels.sh", "ex", "MAC", "--species_list", "distillation/species_4.txt",
        "dataset.x=1", env=env)
    argv = record.read_text().splitlines()
    assert argv[-4:] == ["extract_soft_labels.py", "--species_list",
                         "distillation/species_4.txt", "dataset.x=1"]
    assert "--config-name" not in " ".join(argv)


def test_benchmark_takes_a_bare_gpu_number(stub_docker):
    env, record = stub_docker
    result = run("run_docker_benchmark.sh", "my_benchmark_gpu1", "1", "debug.files_limit=10",
                 "benchmark.paths.student_model=../my_model.pt", env=env)
    assert result.returncode == 0, result.stderr
    argv = record.read_text().splitlines()
    assert argv[argv.index("--gpus") + 1] == '"device=1"'
    assert argv[argv.index("-w") + 1] == "/app/benchmark"
    image = argv.index("bird_classification_benchmark")
    assert argv[image + 1:] == ["python", "run_benchmark.py", "debug.files_limit=10",
                                "benchmark.paths.student_model=../my_model.pt"]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("run_docker_distillation.sh", ["name", "1"], "GPU_ID=1"),
        ("run_docker_training.sh", ["name", "GPU_ID=x"], "GPU number"),
        ("run_docker_benchmark.sh", ["name", "GPU_ID=1"], "GPU number"),
        ("run_docker_training.sh", ["name"], "usage"),
        ("run_docker_training.sh", ["bad name!", "MAC"], "invalid container name"),
    ],
)
def test_bad_arguments_fail_clearly_without_running_docker(stub_docker, script, args, message):
    env, record = stub_docker
    result = run(script, *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert not record.exists()


def test_dry_run_prints_instead_of_running(stub_docker):
    env, record = stub_docker
    result = run("run_docker_training.sh", "n", "MAC", "training.epochs=1", "--dry-run", env=env)
    assert result.returncode == 0
    assert result.stdout.startswith("docker run --rm --name n")
    assert "training.epochs=1" in result.stdout and "--dry-run" not in result.stdout
    assert not record.exists()


def test_extra_mounts(stub_docker):
    env, record = stub_docker
    env = {**env, "EXTRA_MOUNTS": "/data/birds:/app/bird_sound_dataset"}
    run("run_docker_training.sh", "n", "MAC", env=env)
    assert "/data/birds:/app/bird_sound_dataset" in _mounts(record.read_text().splitlines())


def test_compose_has_every_service():
    import yaml

    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    assert set(services) == {"training", "distillation", "soft_labels", "benchmark",
                             "benchmark_quick"}


def test_dockerfiles_lint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is installed by requirements-dev.txt"
    result = subprocess.run([hadolint, "Dockerfile", "Dockerfile.benchmark"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

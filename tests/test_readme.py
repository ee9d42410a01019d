"""Every command the READMEs show runs as written (at least up to argument parsing), and every
config key they name exists in the composed configs."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.paths import BENCHMARK_DIR, register_resolvers
from tests.conftest import REPO_ROOT

READMES = [REPO_ROOT / "README.md", REPO_ROOT / "distillation" / "README.md",
           REPO_ROOT / "benchmark" / "README.md", REPO_ROOT / "edge" / "README.md",
           REPO_ROOT / "export" / "README.md", REPO_ROOT / "evaluation" / "README.md",
           REPO_ROOT / "birdnet" / "README.md"]
KEY_ROOTS = ("dataset", "training", "model", "optimizer", "debug", "loss", "distillation",
             "benchmark", "student_model", "birdnet", "comparison", "efficiency", "paths",
             "evaluation", "soundscape")
HYDRA_SCRIPTS = {"train.py", "train_distillation.py", "run_benchmark.py", "evaluate.py",
                 "benchmark/run_benchmark.py"}


def shell_commands() -> list[tuple[str, str, str]]:
    """(readme, working dir, command) for each line of each ```bash block."""
    found = []
    for readme in READMES:
        if not readme.exists():
            continue
        text = readme.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            cwd = "." if readme.parent == REPO_ROOT else "."
            for line in joined.splitlines():
                line = line.split(" #")[0].strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("cd "):
                    cwd = line[3:].strip()
                    continue
                found.append((readme.relative_to(REPO_ROOT).as_posix(), cwd, line))
    return found


COMMANDS = shell_commands()


def _python_commands():
    return [c for c in COMMANDS if c[2].startswith("python ")]


@pytest.mark.parametrize(("readme", "cwd", "command"), _python_commands(),
                         ids=[c[2][:70] for c in _python_commands()])
def test_python_command_parses(readme, cwd, command):
    argv = shlex.split(command)[1:]
    workdir = (REPO_ROOT / cwd).resolve()
    if argv[0] == "-m":
        module, args = argv[1], argv[2:]
        check_argparse_module(module, args)
        return
    script, args = argv[0], argv[1:]
    if script in HYDRA_SCRIPTS or Path(script).name == "run_benchmark.py":
        args = [a for a in args if a != "--multirun"]
        # A sweep's comma list is checked through its first value.
        args = [re.sub(r"=([^\[\]]*?),.*$", r"=\1", a) if "=" in a and "[" not in a else a
                for a in args]
        result = subprocess.run([sys.executable, script, *args, "--cfg", "job"], cwd=workdir,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{readme}: {command}\n{result.stderr[-1500:]}"
        return
    module = str((workdir / script).resolve().relative_to(REPO_ROOT).with_suffix(""))
    check_argparse_module(module.replace("/", "."), args)


def check_argparse_module(module: str, args: list[str]) -> None:
    """The entry point's own parse_args accepts exactly these arguments."""
    entry = importlib.import_module(module)
    parse = getattr(entry, "parse_args", None)
    if parse is None:
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return
    parse(args)  # argparse exits with status 2 on anything it does not accept


def _console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_console_scripts_point_to_entry_points():
    """Every command pyproject.toml installs names a function that exists."""
    for name, target in _console_scripts().items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_readme_console_commands_are_installed():
    scripts = _console_scripts()
    for readme, _, command in COMMANDS:
        word = shlex.split(command)[0]
        if word == "predict" or word.startswith("bird-"):
            assert word in scripts, f"{readme}: {command}"
            module = scripts[word].split(":")[0]
            check_argparse_module(module, shlex.split(command)[1:])


def test_make_targets_exist():
    makefile = (REPO_ROOT / "Makefile").read_text()
    for _, _, command in COMMANDS:
        if command.startswith("make "):
            target = command.split()[1]
            assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), command


def test_docker_commands():
    for readme, _, command in COMMANDS:
        argv = shlex.split(command)
        if argv[0].startswith("./run_docker_"):
            result = subprocess.run(["bash", *argv, "--dry-run"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, f"{readme}: {command}: {result.stderr}"
        elif argv[:2] == ["docker", "build"]:
            dockerfile = argv[argv.index("-f") + 1] if "-f" in argv else "Dockerfile"
            assert (REPO_ROOT / dockerfile).is_file(), command
        elif argv[:2] == ["docker", "compose"]:
            assert (REPO_ROOT / "docker-compose.yml").is_file()


def _composed_configs():
    configs = []
    with initialize_config_dir(str(REPO_ROOT / "config"), version_base="1.3"):
        configs.append(compose("bird_classification"))
        configs.append(compose("bird_classification", overrides=["model=crnn"]))
        configs.append(compose("evaluate"))
    with initialize_config_dir(str(REPO_ROOT / "distillation" / "configs"), version_base="1.3"):
        configs.append(compose("distillation_config"))
    register_resolvers()
    with initialize_config_dir(str(BENCHMARK_DIR / "config"), version_base="1.3"):
        configs.append(compose("quick_start"))
        configs.append(compose("soundscape"))
    return [OmegaConf.to_container(c, resolve=False) for c in configs]


def _has_key(config: dict, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def readme_keys() -> set[str]:
    keys = set()
    pattern = re.compile(rf"\b((?:{'|'.join(KEY_ROOTS)})(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
    for readme in READMES:
        if readme.exists():
            for match in pattern.finditer(readme.read_text()):
                keys.add(match.group(1))
    return keys


def test_every_config_key_in_the_readmes_exists():
    configs = _composed_configs()
    # Names of files and Python modules (python -m ...) that look like keys.
    not_keys = {k for k in readme_keys()
                if re.search(r"\.(py|md|yaml|txt|csv|json|pt)$", k) or _is_module(k)}
    missing = sorted(k for k in readme_keys() - not_keys
                     if not any(_has_key(c, k) for c in configs))
    assert not missing, f"README keys not in any composed config: {missing}"

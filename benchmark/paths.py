"""Where the benchmark's relative paths point: the benchmark/ folder, from any working dir."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

BENCHMARK_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARK_DIR.parent


def bench_path(path: str | Path) -> Path:
    """A benchmark config path: absolute as given, relative to benchmark/ otherwise."""
    path = Path(str(path)).expanduser()
    return path if path.is_absolute() else (BENCHMARK_DIR / path).resolve()


def repo_path(path: str | Path) -> Path:
    """A training config path (relative to the repository root, where training runs)."""
    path = Path(str(path)).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def register_resolvers() -> None:
    """``${bench_path:...}`` in the benchmark configs (the Hydra output folder uses it)."""
    if not OmegaConf.has_resolver("bench_path"):
        OmegaConf.register_new_resolver("bench_path", lambda p: str(bench_path(p)))

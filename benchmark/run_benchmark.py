"""Benchmark the student against BirdNET on audio neither trained on.

    python run_benchmark.py --config-name=quick_start debug.files_limit=100 \
        benchmark.paths.student_model=../my_model.pt

Stages: discovery (ground truth) -> student predictions -> BirdNET predictions -> comparison.
A stage whose inputs did not change is reused. Results go to benchmark/benchmark_results/.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# Runs as `python run_benchmark.py` inside benchmark/ as well as from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from benchmark.paths import register_resolvers  # noqa: E402
from common.errors import exit_on_user_error  # noqa: E402

log = logging.getLogger("benchmark")
register_resolvers()


@hydra.main(version_base="1.3", config_path="config", config_name="quick_start")
def main(cfg: DictConfig) -> None:
    from benchmark.pipeline import run_benchmark
    from benchmark.soundscape import run_soundscape

    with exit_on_user_error(log):
        # The soundscape config (--config-name=soundscape) adds its own section.
        run_soundscape(cfg) if "soundscape" in cfg else run_benchmark(cfg)


if __name__ == "__main__":
    sys.exit(main())

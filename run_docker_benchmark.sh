#!/usr/bin/env bash
# Benchmark the student against BirdNET in the benchmark image.
# Usage: ./run_docker_benchmark.sh NAME GPU_NUMBER|MAC [hydra overrides...] [--dry-run]
#   NAME        container name
#   GPU_NUMBER  GPU to use, e.g. 1 (MAC = CPU only)
# Further arguments are Hydra overrides for benchmark/run_benchmark.py, e.g.
#   debug.files_limit=10 benchmark.paths.student_model=../my_model.pt
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/docker/common.sh"

[[ $# -ge 2 ]] || die "usage: $0 NAME GPU_NUMBER|MAC [hydra overrides...] [--dry-run]"
NAME="$1"
validate_name "$NAME"
parse_gpu_number "$2"
shift 2
split_dry_run "$@"
run_container "$NAME" "${IMAGE:-bird_classification_benchmark}" /app/benchmark -- \
  python run_benchmark.py ${PASS_ARGS[@]+"${PASS_ARGS[@]}"}

#!/usr/bin/env bash
# BirdNET soft-label extraction (extract_soft_labels.py) in the training image.
# Usage: ./run_docker_soft_labels.sh NAME GPU_ID=N|MAC [extract_soft_labels.py arguments...] [--dry-run]
#   NAME      container name
#   GPU_ID=N  run on GPU N (GPU_ID=0,1 for several); MAC = CPU only
# Every further argument is passed to the script unchanged (key=value is a Hydra override).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/docker/common.sh"

[[ $# -ge 2 ]] || die "usage: $0 NAME GPU_ID=N|MAC [extract_soft_labels.py arguments...] [--dry-run]"
NAME="$1"
validate_name "$NAME"
parse_gpu_assignment "$2"
shift 2
split_dry_run "$@"
run_container "$NAME" "${IMAGE:-bird_classification_edge}" /app -- python extract_soft_labels.py ${PASS_ARGS[@]+"${PASS_ARGS[@]}"}

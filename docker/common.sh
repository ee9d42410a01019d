#!/usr/bin/env bash
# Shared by the run_docker_*.sh scripts: argument parsing, mounts, and the docker command.
# Sourced, not executed.

# The repository is mounted at /app: data (bird_sound_dataset/, esc-50/, augmented_dataset/),
# outputs (logs/, *.pt, exported/, benchmark/benchmark_results/), soft labels and caches stay
# on the host, where the README says they are, and survive the container. Data kept
# elsewhere can be added with EXTRA_MOUNTS="/host/path:/app/bird_sound_dataset ...".

die() {
  echo "error: $*" >&2
  exit 2
}

# Sets GPU_FLAGS (array) from GPU_ID=N | MAC (training-style scripts).
parse_gpu_assignment() {
  local spec="$1"
  GPU_FLAGS=()
  case "$spec" in
    MAC) ;;  # CPU only; nothing else is implied
    GPU_ID=*)
      local id="${spec#GPU_ID=}"
      [[ "$id" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "GPU_ID must be a GPU number (or list), got '$id'"
      GPU_FLAGS=(--gpus "\"device=${id}\"")
      ;;
    ''|*)
      if [[ "$spec" =~ ^[0-9]+$ ]]; then
        die "the second argument must be GPU_ID=${spec} (or MAC), not '${spec}'"
      fi
      die "the second argument must be GPU_ID=N or MAC, got '${spec}'"
      ;;
  esac
}

# Sets GPU_FLAGS from a bare GPU number | MAC (benchmark script).
parse_gpu_number() {
  local spec="$1"
  GPU_FLAGS=()
  if [[ "$spec" == MAC ]]; then
    return
  fi
  [[ "$spec" =~ ^[0-9]+$ ]] || die "the second argument must be a GPU number (e.g. 1) or MAC, got '${spec}'"
  GPU_FLAGS=(--gpus "\"device=${spec}\"")
}

# Splits "$@" into DRY_RUN (0/1) and PASS_ARGS (everything else, in order, untouched).
split_dry_run() {
  DRY_RUN=0
  PASS_ARGS=()
  local arg
  for arg in "$@"; do
    if [[ "$arg" == --dry-run ]]; then
      DRY_RUN=1
    else
      PASS_ARGS+=("$arg")
    fi
  done
}

validate_name() {
  local name="$1"
  [[ -n "$name" ]] || die "a container name is required as the first argument"
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "invalid container name '$name'"
}

# run_container NAME IMAGE WORKDIR -- COMMAND...
run_container() {
  local name="$1" image="$2" workdir="$3"
  shift 4
  local repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local mounts=(-v "$repo:/app") extra
  for extra in ${EXTRA_MOUNTS:-}; do
    mounts+=(-v "$extra")
  done
  local cmd=(docker run --rm --name "$name" --user "$(id -u):$(id -g)" --shm-size 2g
    "${GPU_FLAGS[@]}" "${mounts[@]}" -e HOME=/tmp -w "$workdir" "$image" "$@")
  if [[ $DRY_RUN -eq 1 ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    return 0
  fi
  exec "${cmd[@]}"
}

"""Multi-process training with PyTorch's own engine (torchrun), and the single-process default.

Under ``torchrun --nproc_per_node=N train.py ...`` every process trains on its share of the
training windows (DistributedDataParallel averages the gradients), evaluation predictions are
gathered so that every rank computes the same metrics and takes the same early-stopping
decision, and only rank 0 writes files. Without torchrun nothing here changes behaviour.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group torchrun set up: nccl on GPUs, gloo on CPUs."""
    if not launched_by_torchrun():
        return DistEnv()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    env = DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
    log.info("Distributed training: rank %d of %d (%s)", env.rank, env.world_size, backend)
    return env


def local_device(device: torch.device, env: DistEnv) -> torch.device:
    """One GPU per process under torchrun."""
    if device.type == "cuda" and env.enabled:
        return torch.device("cuda", env.local_rank)
    return device


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def sum_across_ranks(values: list[float], env: DistEnv) -> list[float]:
    if not env.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def max_across_ranks(value: float, env: DistEnv) -> float:
    if not env.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def gather_by_index(indices: np.ndarray, arrays: list[np.ndarray],
                    env: DistEnv) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every rank's rows, once each, ordered by dataset index.

    The distributed sampler pads the last batch with repeated examples so that ranks have
    equal shares; dropping repeated indices makes the metrics exactly the single-process ones.
    """
    if not env.enabled:
        return indices, arrays
    gathered: list = [None] * env.world_size
    dist.all_gather_object(gathered, (indices, arrays))
    all_indices = np.concatenate([g[0] for g in gathered])
    all_arrays = [np.concatenate([g[1][k] for g in gathered]) for k in range(len(arrays))]
    unique, first = np.unique(all_indices, return_index=True)
    return unique, [a[first] for a in all_arrays]


def from_rank0(value: object, env: DistEnv) -> object:
    """Rank 0's ``value`` on every rank (e.g. the run folder, whose name holds a timestamp
    that each process's Hydra may have taken a second apart)."""
    if not env.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()

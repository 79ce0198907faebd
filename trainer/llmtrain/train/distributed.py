"""Process-group setup and FSDP2 sharding.

The contract with the operator (and with torchrun): torchrun sets RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each process. The Job runs, in each pod,
`torchrun --nnodes=$NNODES --node-rank=$JOB_COMPLETION_INDEX --nproc-per-node=$NPROC_PER_NODE
--master-addr=<name>-train-0.<name>-train --master-port=29500 -m llmtrain.cli train ...`.
A single process without torchrun is a world of one: no process group, no sharding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..model.llama import Llama
from .precision import Precision


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup() -> World:
    """Join the process group torchrun describes (nccl on GPUs, gloo on CPUs); set threads per rank."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        # torchrun sets OMP_NUM_THREADS=1: give each rank its share of the cores instead
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_size)))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return World(rank, local_rank, size, device)


def make_deterministic() -> None:
    """Deterministic kernels for this process (before any CUDA work): cuBLAS with a fixed workspace,
    no cuDNN autotuning, and an error from any op that has no deterministic implementation."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(model: Llama, world: World, precision: Precision) -> Llama:
    """FSDP2: each block, then the root, under the precision's mixed-precision policy."""
    if not world.distributed:
        return model
    from torch.distributed.fsdp import fully_shard

    policy = precision.fsdp_policy()
    for block in model.model.layers:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def mean_across(value: float, world: World) -> float:
    """The mean of a scalar over all ranks."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=world.device if world.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / world.size


def all_true(flag: bool, world: World) -> bool:
    """Whether every rank says True (e.g. a stop request seen everywhere)."""
    if not world.distributed:
        return flag
    tensor = torch.tensor([0 if flag else 1], device=world.device if world.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return int(tensor.item()) == 0


def any_true(flag: bool, world: World) -> bool:
    if not world.distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], device=world.device if world.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return int(tensor.item()) > 0


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()

"""Process-group setup and FSDP2 sharding.

The contract with the operator (and with torchrun): torchrun sets RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each process. The Job runs, in each pod,
`torchrun --nnodes=$NNODES --node-rank=$JOB_COMPLETION_INDEX --nproc-per-node=$NPROC_PER_NODE
--master-addr=<name>-train-0.<name>-train --master-port=29500 -m llmtrain.cli train ...`.
A single process without torchrun is a world of one: no process group, no sharding.

Sharding (`spec.resources.sharding`) is FSDP2 over a device mesh: fsdp, one dimension of every process;
hsdp, two, ("replicate", "shard") = (nodes, processes per node): each node holds a whole replica sharded
over its processes, the parameter gathers stay within a node and only the gradients' all-reduce crosses
nodes. torchrun numbers a node's processes consecutively, so the mesh's rows are the nodes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import BadInput
from ..model.llama import Llama
from .precision import Precision

log = logging.getLogger("llmtrain.train")


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int
    device: torch.device
    local_size: int | None = None  # LOCAL_WORLD_SIZE, the processes of this node; None: the whole world

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def layout(self, sharding: str) -> Layout:
        """How `spec.resources.sharding` spreads the model over this world."""
        return layout(sharding, self.size, self.local_size or self.size)


@dataclass(frozen=True)
class Layout:
    """`replicas` copies of the model (hsdp: one per node), each sharded over `shards` processes."""

    sharding: str  # as applied: "fsdp", or "hsdp" when there is more than one node
    replicas: int
    shards: int

    @property
    def mesh_shape(self) -> tuple[int, ...]:
        return (self.replicas, self.shards) if self.sharding == "hsdp" else (self.shards,)

    @property
    def mesh_dims(self) -> tuple[str, ...]:
        return ("replicate", "shard") if self.sharding == "hsdp" else ("shard",)

    def to_json(self) -> dict[str, Any]:
        """What meta.json and the log record: {"sharding": "hsdp", "mesh": [2, 4]}."""
        return {"sharding": self.sharding, "mesh": list(self.mesh_shape)}


def layout(sharding: str, size: int, local_size: int) -> Layout:
    """fsdp: one shard per process. hsdp: one replica per node of `local_size` processes, sharded over
    them; on a single node hsdp is fsdp."""
    if sharding not in ("fsdp", "hsdp"):
        raise BadInput(f"spec.resources.sharding: unknown sharding {sharding!r}; use fsdp or hsdp")
    if sharding == "fsdp" or local_size >= size:
        return Layout("fsdp", 1, size)
    if size % local_size:
        raise BadInput(
            f"spec.resources.sharding: hsdp needs the same processes on every node, but {size} processes do not"
            f" divide into nodes of {local_size} (LOCAL_WORLD_SIZE)"
        )
    return Layout("hsdp", size // local_size, local_size)


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
    return World(rank, local_rank, size, device, local_size)


def make_deterministic() -> None:
    """Deterministic kernels for this process (before any CUDA work): cuBLAS with a fixed workspace,
    no cuDNN autotuning, and an error from any op that has no deterministic implementation."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(model: Llama, world: World, precision: Precision, sharding: str = "fsdp") -> Llama:
    """FSDP2 over the layout's device mesh: each block, then the root, under the precision's
    mixed-precision policy."""
    if not world.distributed:
        return model
    from torch.distributed.fsdp import fully_shard

    plan = world.layout(sharding)
    if world.is_main:
        log.info("sharding", extra={**plan.to_json(), "worldSize": world.size})
    mesh = device_mesh(plan, world)
    policy = precision.fsdp_policy()
    for block in model.model.layers:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def device_mesh(plan: Layout, world: World) -> Any:
    """The layout's `DeviceMesh` over this world's processes (rows: nodes, under hsdp)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(world.device.type, plan.mesh_shape, mesh_dim_names=plan.mesh_dims)


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

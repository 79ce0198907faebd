"""The memory a training process needs, estimated before anything is allocated; refused when it cannot fit.

Per process, in bytes (P parameters, S processes sharing them: every process under fsdp, the processes of
one node under hsdp (`distributed.layout`), 1 without sharding):

- parameters, gradients and AdamW's two moments: fp32, 4 + 4 + 8 bytes per parameter, divided by S;
- low-precision copies: FSDP gathers one block at a time (the next one prefetched), and the root's
  embedding and output projection, in the compute dtype, with the gathered block's gradients; one GPU
  under bf16 autocast keeps a bf16 copy of every weight;
- a CPU's background checkpoint saves (`checkpointing.asyncSave`): a staging copy of its share of the
  parameters and AdamW moments, 12 bytes per parameter divided by S (on GPUs the copy is in host memory,
  not the device's);
- activations of one micro-batch (microBatchSize x maxSeqLen tokens), counted tensor by tensor from what
  autograd saves in `model/llama.py`: every block's, or with activation checkpointing each block's input
  plus one block recomputed and its gradients; and the logits with their fp32 loss (usually the largest single item).

The estimate is compared with what the device has: free GPU memory (`torch.cuda.mem_get_info`), or on a
CPU the smaller of MemAvailable and the cgroup's headroom, shared by the processes of the node. A run is
refused only when the estimate exceeds that by more than `SAFETY_FACTOR`: the estimate errs either way
by a few tens of percent (allocator caching and fragmentation, the kernels' workspaces), and a run that
might fit is tried rather than refused; one that then runs out of memory still fails cleanly (exit 2).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..api.trainingrun import TrainingRun
from ..errors import BadInput
from ..model.shape import LlamaConfig, block_parameters, parameter_count, root_parameters
from .distributed import layout
from .precision import Precision

log = logging.getLogger("llmtrain.train")

#: Refuse only when the estimate exceeds the available memory by more than this factor.
SAFETY_FACTOR = 1.25
_FP32 = 4
_GIB = 2**30


class DoesNotFit(BadInput, ValueError):
    """The model, as configured, cannot fit the device's memory (exit 2: the same spec fails the same way)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs, by what holds them."""

    parameters: int
    gradients: int
    optimizer: int
    precision_copies: int
    activations: int
    tokens_per_micro_batch: int
    checkpoint_staging: int = 0

    @property
    def total(self) -> int:
        held = self.parameters + self.gradients + self.optimizer + self.precision_copies
        return held + self.activations + self.checkpoint_staging

    def describe(self) -> str:
        parts = {
            "parameters": self.parameters,
            "gradients": self.gradients,
            "AdamW states": self.optimizer,
            "low-precision copies": self.precision_copies,
            f"activations of {self.tokens_per_micro_batch:,} tokens": self.activations,
            "checkpoint staging": self.checkpoint_staging,
        }
        return ", ".join(f"{name} {gib(value)}" for name, value in parts.items() if value)


def gib(value: float) -> str:
    return f"{value / _GIB:.2f} GiB"


def _block_activation_bytes(config: LlamaConfig, compute: int) -> int:
    """Bytes autograd saves per token in one block (see `Block`): the fp32 input and the output of both
    norms, q and k before and after the rotation, SDPA's inputs and output, o_proj's input, and the
    MLP's gate, up, SiLU and product."""
    hidden, kv_width = config.hidden_size, config.kv_width
    norms = 2 * (_FP32 * hidden + 2 * compute * hidden)
    attention = compute * (7 * hidden + 2 * kv_width)
    mlp = compute * 4 * config.intermediate_size
    return norms + attention + mlp


def activation_bytes(config: LlamaConfig, tokens: int, compute: int, checkpointing: bool) -> int:
    """Bytes saved for the backward pass of one micro-batch of `tokens` tokens."""
    block = _block_activation_bytes(config, compute)
    # checkpointing keeps each block's input; backward recomputes one block and holds its gradients too
    blocks = config.layers * compute * config.hidden_size + 2 * block if checkpointing else config.layers * block
    embedding_and_norm = _FP32 * config.hidden_size + _FP32 * config.hidden_size + 2 * compute * config.hidden_size
    logits = config.vocab_size * (compute + 3 * _FP32)  # lm_head's output, its fp32 copy, log-softmax, gradient
    return tokens * (blocks + embedding_and_norm + logits)


def compute_bytes(device_type: str, precision: str, sharded: bool) -> int:
    """Bytes per activation: those of the compute dtype (`precision.Precision`), else fp32's."""
    dtype = Precision(precision, device_type, sharded).compute_dtype
    return dtype.itemsize if dtype is not None else _FP32


def estimate(
    config: LlamaConfig, run: TrainingRun, device_type: str, world_size: int, local_size: int | None = None
) -> MemoryEstimate:
    """What one of `world_size` processes (`local_size` a node, all of them when None) needs to train
    `config` as `run` says."""
    training = run.spec.training
    sharded = world_size > 1
    compute = compute_bytes(device_type, training.precision, sharded)
    count = parameter_count(config)
    shard = -(-count // sharing_processes(run, world_size, local_size))
    if sharded:  # gathered: two blocks (one prefetched) and the root, in the compute dtype; one block's gradients
        gathered = 2 * block_parameters(config) + root_parameters(config)
        copies = compute * gathered + _FP32 * block_parameters(config)
    else:  # bf16 autocast caches a copy of each weight it casts
        copies = 2 * count if compute == 2 else 0
    tokens = training.micro_batch_size * config.max_seq_len
    staged = device_type == "cpu" and run.spec.checkpointing.async_save
    return MemoryEstimate(
        parameters=_FP32 * shard,
        gradients=_FP32 * shard,
        optimizer=2 * _FP32 * shard,
        precision_copies=copies,
        activations=activation_bytes(config, tokens, compute, training.activation_checkpointing),
        tokens_per_micro_batch=tokens,
        checkpoint_staging=3 * _FP32 * shard if staged else 0,
    )


def sharing_processes(run: TrainingRun, world_size: int, local_size: int | None = None) -> int:
    """The processes that share (shard) each parameter, its gradient and its AdamW states."""
    return layout(run.spec.resources.sharding, world_size, local_size or world_size).shards


def available_bytes(device: torch.device, local_processes: int = 1) -> int | None:
    """Memory this process may use: free GPU memory, or its share of the node's; None when unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    limits = [value for value in (_mem_available(), _cgroup_headroom()) if value is not None]
    return min(limits) // max(1, local_processes) if limits else None


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's limit less its usage (v2: memory.max; v1: memory.limit_in_bytes), None if unlimited."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # v1 writes a huge number for "no limit"
            return max(0, int(limit) - usage)
    return None


def ensure_fits(
    config: LlamaConfig, run: TrainingRun, device: torch.device, world_size: int, local_size: int | None = None
) -> MemoryEstimate:
    """Refuse (`DoesNotFit`) a run whose estimate exceeds the available memory by more than SAFETY_FACTOR.
    `local_size`: the processes of this node (default: torchrun's LOCAL_WORLD_SIZE)."""
    local_size = local_size or int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    needed = estimate(config, run, device.type, world_size, local_size)
    local_processes = local_size if device.type == "cpu" else 1
    available = available_bytes(device, local_processes)
    log.info(
        "memory estimate",
        extra={"estimateBytes": needed.total, "availableBytes": available, "device": str(device)},
    )
    if available is not None and needed.total > SAFETY_FACTOR * available:
        raise DoesNotFit(_refusal(needed, available, run, device, world_size, local_size))
    return needed


def _refusal(
    needed: MemoryEstimate, available: int, run: TrainingRun, device: torch.device, world_size: int, local_size: int
) -> str:
    training = run.spec.training
    sharing = sharing_processes(run, world_size, local_size)
    fixes = ["a smaller model (spec.model: fewer layers, a smaller hiddenSize or intermediateSize)"]
    if sharing < world_size:  # hsdp: a node's processes share the state
        fixes.append(
            f"spec.resources.sharding: fsdp (shards parameters, gradients and AdamW states over all {world_size}"
            f" processes; hsdp shards them over the {sharing} of a node)"
        )
        fixes.append("more GPUs per node (spec.resources.gpusPerNode)")
    else:
        fixes.append(
            "more nodes or GPUs (spec.resources: FSDP shards parameters, gradients and AdamW states over"
            f" {world_size} process(es) now)"
        )
    if not training.activation_checkpointing:
        fixes.append("spec.training.activationCheckpointing: true")
    if training.micro_batch_size > 1:
        fixes.append(
            f"a smaller spec.training.microBatchSize (now {training.micro_batch_size}; raise"
            " gradientAccumulationSteps to keep the batch)"
        )
    return (
        f"the model does not fit: training needs about {gib(needed.total)} per process ({needed.describe()})"
        f" but {device} has {gib(available)} available (refused above {SAFETY_FACTOR}x that);"
        f" use {', or '.join(fixes)}"
    )

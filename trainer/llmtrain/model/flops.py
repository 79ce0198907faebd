"""Model FLOPs per token and accelerator peaks, for MFU (torchtitan's convention).

FLOPs per token = 6 x N + 12 x L x d x T: N parameters without the input embedding (with tied
embeddings the output projection still counts), L layers, d hidden size, T sequence length (the
attention score and value matmuls, forward and backward). MFU = achieved FLOP/s / peak.

Peak dense FLOP/s per device by precision (vendor datasheets, dense, no sparsity):

| device | bf16 / fp16 | fp32 (TF32 where it applies) |
|---|---:|---:|
| NVIDIA H100 SXM / H200 | 989 T | 494 T (TF32) |
| NVIDIA H100 PCIe | 756 T | 378 T (TF32) |
| NVIDIA A100 | 312 T | 156 T (TF32) |
| NVIDIA L40S | 362 T | 183 T (TF32) |
| NVIDIA L4 | 121 T | 60 T (TF32) |
| NVIDIA A10 / A10G | 125 T | 62.5 T (TF32) |
CPUs: measured at start-up with an fp32 GEMM (`measured_cpu_peak`). `LLMTRAIN_PEAK_FLOPS` overrides all.
"""

from __future__ import annotations

import functools
import os
import time

from .shape import LlamaConfig

GPU_PEAKS: dict[str, tuple[float, float]] = {
    "H200": (989e12, 494e12),
    "H100 SXM": (989e12, 494e12),
    "H100 80GB HBM3": (989e12, 494e12),
    "H100 PCIe": (756e12, 378e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
    "L40S": (362e12, 183e12),
    "L4": (121e12, 60e12),
    "A10": (125e12, 62.5e12),
}


def flops_per_token(config: LlamaConfig, parameters_without_embedding: int) -> float:
    return 6.0 * parameters_without_embedding + 12.0 * config.layers * config.hidden_size * config.max_seq_len


@functools.cache
def measured_cpu_peak(size: int = 1024, repeats: int = 10) -> float:
    """fp32 GEMM FLOP/s of this process's threads, measured once."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2.0 * size**3 * repeats / (time.perf_counter() - started)


def device_peak(device_name: str, low_precision: bool) -> float | None:
    """Peak FLOP/s of a GPU by name (None when unknown)."""
    for key, (half, single) in GPU_PEAKS.items():
        if key in device_name:
            return half if low_precision else single
    return None


def peak_flops(device: str, low_precision: bool) -> float | None:
    """The peak this process's MFU is measured against (per process / device)."""
    override = os.environ.get("LLMTRAIN_PEAK_FLOPS")
    if override:
        return float(override)
    if device == "cpu":
        return measured_cpu_peak()
    import torch

    return device_peak(torch.cuda.get_device_name(), low_precision)

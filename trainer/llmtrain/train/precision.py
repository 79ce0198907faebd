"""Precision: what `spec.training.precision` (fp32, bf16, fp16) means on this device and world, decided once.

Parameters, gradients and optimizer states stay fp32 everywhere. On GPUs the matmuls run in 16 bits:
under FSDP (more than one process) through its `MixedPrecisionPolicy` (bf16 or fp16 parameters for
compute, fp32 gradient reduction); on one GPU through bf16 autocast, while fp16 on one GPU computes in
fp32 (autocast in fp16 needs a loss scaler, which lives here when it comes). CPUs compute in fp32.
`distributed.shard`, the training step and the memory estimate all ask this module.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # spec.training.precision
    device_type: str  # "cuda" or "cpu"
    sharded: bool  # FSDP: more than one process

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """The dtype the matmuls run in, when not fp32."""
        if self.fsdp_param_dtype is not None:
            return self.fsdp_param_dtype
        return self.autocast_dtype

    @property
    def fsdp_param_dtype(self) -> torch.dtype | None:
        """FSDP's compute copy of the parameters: 16 bits on GPUs, else None (fp32)."""
        return DTYPES.get(self.name) if self.sharded and self.device_type == "cuda" else None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """One GPU without FSDP: bf16 autocast stands in for FSDP's policy; None where autocast is off."""
        unsharded_gpu = not self.sharded and self.device_type == "cuda"
        return torch.bfloat16 if unsharded_gpu and self.name == "bf16" else None

    @property
    def low_precision_peak(self) -> bool:
        """MFU is measured against the device's 16-bit peak whenever the spec asks for 16 bits."""
        return self.name != "fp32"

    def autocast(self) -> AbstractContextManager[Any]:
        """The context the forward pass (and its loss) runs in."""
        dtype = self.autocast_dtype
        return torch.autocast(self.device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def fsdp_policy(self) -> Any:
        """FSDP2's `MixedPrecisionPolicy`: 16-bit parameters for compute with fp32 reduction, or fp32 throughout."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        dtype = self.fsdp_param_dtype
        return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()

"""Precision: what `spec.training.precision` (fp32, bf16, fp16) means on this device and world, decided once.

Parameters, gradients and optimizer states stay fp32 everywhere; the matmuls run in the compute dtype:
- bf16 on GPUs: under FSDP (more than one process) its `MixedPrecisionPolicy` (bf16 parameters for
  compute, fp32 gradient reduction); on one GPU bf16 autocast. On CPUs a bf16 run computes in fp32.
- fp16 on GPUs and CPUs alike: FSDP's policy with fp16 parameters and fp32 reduction, or fp16 autocast
  on one process; always with a dynamic loss scale (`loss_scale.LossScaler`), which fp16's narrow range
  needs and bf16's does not.
- fp32: fp32 throughout.
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
    def low_precision_dtype(self) -> torch.dtype | None:
        """The 16-bit dtype this device computes the spec's precision in: fp16 anywhere, bf16 on GPUs."""
        if self.name == "fp16" or (self.name == "bf16" and self.device_type == "cuda"):
            return DTYPES[self.name]
        return None

    @property
    def fsdp_param_dtype(self) -> torch.dtype | None:
        """FSDP's compute copy of the parameters (more than one process), else None (fp32)."""
        return self.low_precision_dtype if self.sharded else None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """One process without FSDP: autocast stands in for FSDP's policy; None where autocast is off."""
        return None if self.sharded else self.low_precision_dtype

    @property
    def loss_scaling(self) -> bool:
        """Whether gradients need a dynamic loss scale: fp16 only (bf16 has fp32's range)."""
        return self.name == "fp16"

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

"""One home for precision: what each `training.precision` means on each device and world."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.fsdp import MixedPrecisionPolicy

from llmtrain.train import memory
from llmtrain.train.precision import Precision

# (precision, device, sharded) -> (FSDP's compute dtype, autocast dtype)
CASES = [
    ("fp32", "cuda", True, None, None),
    ("bf16", "cuda", True, torch.bfloat16, None),
    ("fp16", "cuda", True, torch.float16, None),
    ("fp32", "cuda", False, None, None),
    ("bf16", "cuda", False, None, torch.bfloat16),
    ("fp16", "cuda", False, None, None),  # no fp16 autocast without a loss scaler: fp32 compute
    ("bf16", "cpu", True, None, None),
    ("fp16", "cpu", True, None, None),
    ("bf16", "cpu", False, None, None),
]


@pytest.mark.parametrize(("name", "device", "sharded", "fsdp", "autocast"), CASES)
def test_dtypes_by_precision_device_and_world(name, device, sharded, fsdp, autocast):
    precision = Precision(name, device, sharded)
    assert precision.fsdp_param_dtype == fsdp
    assert precision.autocast_dtype == autocast
    assert precision.compute_dtype == (fsdp or autocast)
    assert precision.low_precision_peak == (name != "fp32")
    expected_bytes = 2 if (fsdp or autocast) else 4
    assert memory.compute_bytes(device, name, sharded) == expected_bytes  # the estimate asks the same question


@pytest.mark.parametrize(("name", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_fsdp_policy_on_gpus_computes_in_16_bits_and_reduces_in_fp32(name, dtype):
    policy = Precision(name, "cuda", True).fsdp_policy()
    assert policy == MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


@pytest.mark.parametrize(("name", "device"), [("fp32", "cuda"), ("bf16", "cpu"), ("fp16", "cpu")])
def test_fsdp_policy_is_fp32_throughout_otherwise(name, device):
    policy = Precision(name, device, True).fsdp_policy()
    assert policy == MixedPrecisionPolicy() and policy.param_dtype is None and policy.reduce_dtype is None


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
def test_autocast_stays_off_on_cpus(name):
    layer = torch.nn.Linear(4, 4)
    with Precision(name, "cpu", False).autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert layer(torch.ones(1, 4)).dtype == torch.float32

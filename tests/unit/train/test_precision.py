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
    ("fp16", "cuda", False, None, torch.float16),  # with a loss scaler (loss_scale.py)
    ("bf16", "cpu", True, None, None),  # CPUs compute bf16 runs in fp32
    ("fp16", "cpu", True, torch.float16, None),  # fp16 computes in fp16 on CPUs too
    ("bf16", "cpu", False, None, None),
    ("fp16", "cpu", False, None, torch.float16),
    ("fp32", "cpu", True, None, None),
    ("fp32", "cpu", False, None, None),
]


@pytest.mark.parametrize(("name", "device", "sharded", "fsdp", "autocast"), CASES)
def test_dtypes_by_precision_device_and_world(name, device, sharded, fsdp, autocast):
    precision = Precision(name, device, sharded)
    assert precision.fsdp_param_dtype == fsdp
    assert precision.autocast_dtype == autocast
    assert precision.compute_dtype == (fsdp or autocast)
    assert precision.low_precision_peak == (name != "fp32")
    assert precision.loss_scaling == (name == "fp16")  # fp16 alone needs a loss scale, on every path
    expected_bytes = 2 if (fsdp or autocast) else 4
    assert memory.compute_bytes(device, name, sharded) == expected_bytes  # the estimate asks the same question


@pytest.mark.parametrize(
    ("name", "device", "dtype"),
    [("bf16", "cuda", torch.bfloat16), ("fp16", "cuda", torch.float16), ("fp16", "cpu", torch.float16)],
)
def test_fsdp_policy_computes_in_16_bits_and_reduces_in_fp32(name, device, dtype):
    policy = Precision(name, device, True).fsdp_policy()
    assert policy == MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


@pytest.mark.parametrize(("name", "device"), [("fp32", "cuda"), ("bf16", "cpu"), ("fp32", "cpu")])
def test_fsdp_policy_is_fp32_throughout_otherwise(name, device):
    policy = Precision(name, device, True).fsdp_policy()
    assert policy == MixedPrecisionPolicy() and policy.param_dtype is None and policy.reduce_dtype is None


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_autocast_stays_off_on_cpus_for_fp32_and_bf16(name):
    layer = torch.nn.Linear(4, 4)
    with Precision(name, "cpu", False).autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_fp16_autocasts_on_cpus():
    layer = torch.nn.Linear(4, 4)
    with Precision("fp16", "cpu", False).autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
        assert layer(torch.ones(1, 4)).dtype == torch.float16
    assert layer.weight.dtype == torch.float32  # the parameters stay fp32

"""A model that cannot fit is refused before allocation, with an estimate of what it needs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llmtrain import errors, exitcodes
from llmtrain.api import DataSource, TrainingRun, load_resources, select_resource
from llmtrain.model.llama import Llama, LlamaConfig, count_parameters
from llmtrain.train import memory
from support.paths import ROOT

GIB = 2**30


def _run(valid, **training) -> TrainingRun:
    valid["TrainingRun"]["spec"]["training"].update(training)
    return TrainingRun.model_validate(valid["TrainingRun"])


def _config(**changes) -> LlamaConfig:
    base = LlamaConfig(
        vocab_size=4096, layers=4, hidden_size=256, heads=8, kv_heads=4, intermediate_size=704, max_seq_len=256
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "config",
    [
        _config(),
        _config(tie_embeddings=True),
        _config(layers=3, hidden_size=96, heads=6, kv_heads=6, intermediate_size=100, vocab_size=517),
        _config(layers=1, hidden_size=64, heads=8, kv_heads=1, intermediate_size=8, vocab_size=384),
    ],
)
def test_parameter_count_is_the_models(config):
    with torch.device("meta"):
        model = Llama(config)
    assert memory.parameter_count(config) == count_parameters(model)


def test_the_estimate_grows_with_the_model_and_the_batch(valid):
    run = _run(valid, microBatchSize=4)
    base = memory.estimate(_config(), run, "cpu", 1).total
    assert memory.estimate(_config(layers=8), run, "cpu", 1).total > base
    assert memory.estimate(_config(hidden_size=512), run, "cpu", 1).total > base
    assert memory.estimate(_config(intermediate_size=2048), run, "cpu", 1).total > base
    assert memory.estimate(_config(vocab_size=32000), run, "cpu", 1).total > base
    assert memory.estimate(_config(max_seq_len=1024), run, "cpu", 1).total > base
    assert memory.estimate(_config(), _run(valid, microBatchSize=8), "cpu", 1).total > base


def test_fp32_training_needs_16_bytes_a_parameter_before_activations(valid):
    config, run = _config(), _run(valid, precision="fp32")
    needed = memory.estimate(config, run, "cuda", 1)
    count = memory.parameter_count(config)
    assert (needed.parameters, needed.gradients, needed.optimizer) == (4 * count, 4 * count, 8 * count)
    assert needed.precision_copies == 0
    assert needed.total == 16 * count + needed.activations


def test_background_checkpoints_on_a_cpu_add_a_staging_copy_of_the_state(valid):
    config = _config()
    count = memory.parameter_count(config)
    background = memory.estimate(config, _run(valid, precision="fp32"), "cpu", 2)
    valid["TrainingRun"]["spec"]["checkpointing"] = {"asyncSave": False}
    synchronous = memory.estimate(config, _run(valid, precision="fp32"), "cpu", 2)
    assert background.checkpoint_staging == 12 * -(-count // 2)  # fp32 weights and two moments, one rank's shard
    assert synchronous.checkpoint_staging == 0
    assert background.total - synchronous.total == background.checkpoint_staging
    valid["TrainingRun"]["spec"]["checkpointing"] = {}
    assert memory.estimate(config, _run(valid, precision="fp32"), "cuda", 2).checkpoint_staging == 0  # host memory


def test_bf16_on_one_gpu_adds_a_copy_and_halves_activations(valid):
    config = _config()
    fp32 = memory.estimate(config, _run(valid, precision="fp32"), "cuda", 1)
    bf16 = memory.estimate(config, _run(valid, precision="bf16"), "cuda", 1)
    assert bf16.precision_copies == 2 * memory.parameter_count(config)
    assert bf16.activations < fp32.activations
    assert memory.estimate(config, _run(valid, precision="bf16"), "cpu", 1).activations == fp32.activations


def test_activation_checkpointing_saves_activations(valid):
    config = _config(layers=16)
    plain = memory.estimate(config, _run(valid, microBatchSize=8), "cpu", 1)
    checkpointed = memory.estimate(config, _run(valid, microBatchSize=8, activationCheckpointing=True), "cpu", 1)
    assert checkpointed.activations < plain.activations
    assert checkpointed.parameters == plain.parameters


def test_fsdp_divides_the_sharded_parts_by_the_world_size(valid):
    config, run = _config(layers=32, hidden_size=1024, intermediate_size=2816), _run(valid)
    one, eight = memory.estimate(config, run, "cuda", 1), memory.estimate(config, run, "cuda", 8)
    count = memory.parameter_count(config)
    assert eight.parameters == 4 * -(-count // 8) and eight.optimizer == 8 * -(-count // 8)
    assert eight.activations == one.activations  # each process still runs its own micro-batch
    assert eight.total < one.total / 2


def test_a_model_that_cannot_fit_is_refused_with_the_numbers(valid, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device, local_processes=1: 1 * GIB)
    config, run = _config(layers=24, hidden_size=2048, heads=16, kv_heads=16, intermediate_size=5632), _run(valid)
    needed = memory.estimate(config, run, "cpu", 1)
    with pytest.raises(memory.DoesNotFit) as caught:
        memory.ensure_fits(config, run, torch.device("cpu"), 1)
    message = str(caught.value)
    assert f"needs about {needed.total / GIB:.2f} GiB per process" in message
    assert "cpu has 1.00 GiB available" in message
    assert "a smaller model" in message and "more nodes or GPUs" in message
    assert "activationCheckpointing: true" in message
    assert errors.exit_code_for(caught.value) == exitcodes.BAD_INPUT


def test_the_fixes_offered_are_those_not_taken_yet(valid, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device, local_processes=1: 1024)
    run = _run(valid, microBatchSize=1, activationCheckpointing=True)
    with pytest.raises(memory.DoesNotFit) as caught:
        memory.ensure_fits(_config(), run, torch.device("cpu"), 1)
    assert "activationCheckpointing" not in str(caught.value) and "microBatchSize" not in str(caught.value)


def test_the_safety_factor_lets_a_close_call_run(valid, monkeypatch):
    config, run = _config(), _run(valid)
    needed = memory.estimate(config, run, "cpu", 1).total
    monkeypatch.setattr(memory, "available_bytes", lambda device, local_processes=1: int(needed / 1.2))
    memory.ensure_fits(config, run, torch.device("cpu"), 1)
    monkeypatch.setattr(memory, "available_bytes", lambda device, local_processes=1: int(needed / 1.3))
    with pytest.raises(memory.DoesNotFit):
        memory.ensure_fits(config, run, torch.device("cpu"), 1)


def test_unknown_memory_refuses_nothing(valid, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device, local_processes=1: None)
    memory.ensure_fits(
        _config(layers=512, hidden_size=65536, heads=64, kv_heads=64), _run(valid), torch.device("cpu"), 1
    )


def test_the_example_fits_on_this_machine():
    resources = load_resources(ROOT / "examples/run.yaml")
    run, source = select_resource(resources, TrainingRun), select_resource(resources, DataSource)
    config = LlamaConfig.from_spec(run.spec.model, source.spec.tokenizer.vocab_size)
    needed = memory.ensure_fits(config, run, torch.device("cpu"), 1)
    assert needed.total < memory.available_bytes(torch.device("cpu"))


def test_cpu_memory_is_the_least_of_meminfo_and_the_cgroup_shared_by_the_node(monkeypatch):
    monkeypatch.setattr(memory, "_mem_available", lambda: 64 * GIB)
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: 16 * GIB)
    assert memory.available_bytes(torch.device("cpu"), local_processes=4) == 4 * GIB
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: None)
    assert memory.available_bytes(torch.device("cpu")) == 64 * GIB


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"memory.max": "max\n", "memory.current": "100\n"}, None),
        ({"memory.max": "8589934592\n", "memory.current": "1073741824\n"}, 7 * GIB),
        ({"memory/memory.limit_in_bytes": "4294967296\n", "memory/memory.usage_in_bytes": "0\n"}, 4 * GIB),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "5\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_headroom(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert memory._cgroup_headroom(tmp_path) == expected

"""spec.resources.sharding: the layout (fsdp or hsdp) each world gets, the memory it leaves each process,
and the spec rule that hsdp needs nodes to replicate across."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llmtrain.api import SpecError, TrainingRun, crdgen, parse_resource
from llmtrain.errors import BadInput
from llmtrain.model.llama import LlamaConfig
from llmtrain.train import memory
from llmtrain.train.distributed import Layout, World, layout
from support.apiserver import admit

GIB = 2**30
CONFIG = LlamaConfig(
    vocab_size=32000, layers=32, hidden_size=1024, heads=16, kv_heads=8, intermediate_size=2816, max_seq_len=256
)


def _run(valid, **resources) -> TrainingRun:
    valid["TrainingRun"]["spec"]["resources"] = resources
    return TrainingRun.model_validate(valid["TrainingRun"])


@pytest.mark.parametrize(
    ("sharding", "size", "local", "expected"),
    [
        ("fsdp", 8, 4, Layout("fsdp", 1, 8)),
        ("hsdp", 8, 4, Layout("hsdp", 2, 4)),
        ("hsdp", 4, 1, Layout("hsdp", 4, 1)),  # CPU nodes, one process each: whole replicas
        ("hsdp", 4, 4, Layout("fsdp", 1, 4)),  # one node: nothing to replicate across
        ("hsdp", 1, 1, Layout("fsdp", 1, 1)),
    ],
)
def test_the_layout_of_a_world(sharding, size, local, expected):
    assert layout(sharding, size, local) == expected


def test_the_mesh_is_nodes_by_processes_under_hsdp_and_flat_under_fsdp():
    hsdp, fsdp = layout("hsdp", 16, 8), layout("fsdp", 16, 8)
    assert (hsdp.mesh_shape, hsdp.mesh_dims) == ((2, 8), ("replicate", "shard"))
    assert (fsdp.mesh_shape, fsdp.mesh_dims) == ((16,), ("shard",))
    assert hsdp.to_json() == {"sharding": "hsdp", "mesh": [2, 8]}


def test_a_world_without_a_local_size_is_one_node():
    world = World(0, 0, 4, torch.device("cpu"))
    assert world.layout("hsdp") == Layout("fsdp", 1, 4)
    assert dataclasses.replace(world, local_size=2).layout("hsdp") == Layout("hsdp", 2, 2)


def test_uneven_nodes_and_unknown_shardings_are_refused():
    with pytest.raises(BadInput, match="6 processes do not divide into nodes of 4"):
        layout("hsdp", 6, 4)
    with pytest.raises(BadInput, match="use fsdp or hsdp"):
        layout("zero3", 4, 2)


def test_hsdp_shards_the_state_over_a_node_not_the_world(valid):
    fsdp, hsdp = _run(valid, nodes=2, gpusPerNode=4), _run(valid, nodes=2, gpusPerNode=4, sharding="hsdp")
    count = memory.parameter_count(CONFIG)
    over_world = memory.estimate(CONFIG, fsdp, "cuda", 8, 4)
    over_node = memory.estimate(CONFIG, hsdp, "cuda", 8, 4)
    assert over_world.parameters == 4 * -(-count // 8) and over_world.optimizer == 8 * -(-count // 8)
    assert over_node.parameters == 4 * -(-count // 4) and over_node.optimizer == 8 * -(-count // 4)
    assert over_node.gradients == over_node.parameters
    assert over_node.activations == over_world.activations and over_node.precision_copies == over_world.precision_copies
    assert memory.estimate(CONFIG, hsdp, "cuda", 8, 8) == over_world  # hsdp on one node is fsdp
    assert memory.estimate(CONFIG, hsdp, "cuda", 2, 1).parameters == 4 * count  # one process a node: a replica each


def test_ensure_fits_takes_the_node_from_torchrun(valid, monkeypatch):
    run = _run(valid, nodes=2, gpusPerNode=2, sharding="hsdp")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(memory, "available_bytes", lambda device, local_processes=1: 1 << 50)
    assert memory.ensure_fits(CONFIG, run, torch.device("cuda"), 4) == memory.estimate(CONFIG, run, "cuda", 4, 2)


def test_a_refusal_under_hsdp_offers_fsdp_not_more_nodes(valid, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device, local_processes=1: 1 * GIB)
    run = _run(valid, nodes=4, gpusPerNode=2, sharding="hsdp")
    with pytest.raises(memory.DoesNotFit) as caught:
        memory.ensure_fits(CONFIG, run, torch.device("cuda"), 8, 2)
    message = str(caught.value)
    assert "spec.resources.sharding: fsdp (shards parameters, gradients and AdamW states over all 8" in message
    assert "more GPUs per node" in message and "more nodes" not in message


def test_sharding_defaults_to_fsdp(valid):
    assert _run(valid).spec.resources.sharding == "fsdp"
    assert _run(valid, nodes=2, sharding="hsdp").spec.resources.sharding == "hsdp"


def test_hsdp_on_one_node_is_refused_by_the_models_and_the_crd(valid):
    obj = valid["TrainingRun"]
    obj["spec"]["resources"] = {"nodes": 1, "gpusPerNode": 8, "sharding": "hsdp"}
    with pytest.raises(SpecError) as caught:
        parse_resource(obj)
    problems = {p.path: p.message for p in caught.value.problems}
    expected = "hsdp replicates the model across nodes and needs nodes >= 2; on one node use sharding: fsdp"
    assert expected in problems["spec.resources.sharding"]
    assert [str(p) for p in caught.value.problems] == admit(crdgen.crd(TrainingRun), obj)
    obj["spec"]["resources"]["nodes"] = 2
    assert admit(crdgen.crd(TrainingRun), obj) == []

"""HSDP (`spec.resources.sharding: hsdp`) as the operator runs it: one torchrun per node (`--nnodes=2
--node-rank=i`), each with its processes, on 127.0.0.1. The tiny run on 2 "nodes" of 2 gloo ranks (a
(replicate, shard) = (2, 2) mesh) against one process seeing the same global batch; then an HSDP
checkpoint resumed under 2-rank FSDP and under one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workload.test_train import dataset, losses, train  # noqa: F401 - `dataset` is a fixture

from support.tiny_run import tiny_run

pytestmark = pytest.mark.slow  # several torchrun launches (~1-2 min on 2 cores)

STEPS = 20
GLOBAL_SEQUENCES = 16  # micro-batch 2 on every process: 4 ranks accumulate 2, 2 ranks 4, one process 8
CLIP = 0.6  # below most steps' gradient norm: a wrong norm under the 2-D mesh would change the update


def spec_file(tmp: Path, ranks: int, nodes: int = 1, sharding: str = "fsdp") -> Path:
    """The tiny run with microBatchSize 2 and the accumulation that keeps the global batch at 16."""
    path = tmp / f"run-{nodes}-{ranks}-{sharding}.yaml"
    accumulation = GLOBAL_SEQUENCES // (2 * ranks)
    resources = {"nodes": nodes, "sharding": sharding}
    run = tiny_run("tiny", "corpus", STEPS, 2, accumulation, training={"maxGradNorm": CLIP}, resources=resources)
    path.write_text(yaml.safe_dump(run))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_on_nodes(spec: Path, data: Path, checkpoints: Path, nodes: int, per_node: int, *extra: str) -> list[int]:
    """One torchrun a node, as each pod of the Job runs it; every node's exit code."""
    port = free_port()
    args = [
        *("-m", "llmtrain.cli", "train", "-f", str(spec), "--data", str(data), "--checkpoints", str(checkpoints)),
        *("--metrics-dir", str(checkpoints.parent / f"{checkpoints.name}-metrics")),
        *extra,
    ]
    launches = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node-rank={node}"),
                *(f"--nproc-per-node={per_node}", "--master-addr=127.0.0.1", f"--master-port={port}"),
                "--max-restarts=0",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for node in range(nodes)
    ]
    codes = []
    for launch in launches:
        _, stderr = launch.communicate(timeout=600)
        if launch.returncode:
            print(stderr[-4000:])
        codes.append(launch.returncode)
    return codes


def metrics(checkpoints: Path) -> list[dict]:
    """The metrics JSONL's records in order (a resumed run appends)."""
    path = checkpoints.parent / f"{checkpoints.name}-metrics" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def grad_norms(checkpoints: Path) -> dict[int, float]:
    return {record["step"]: record["gradNorm"] for record in metrics(checkpoints)}


def meta(checkpoints: Path, step: int) -> dict:
    return json.loads((checkpoints / f"step-{step:08d}" / "meta.json").read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, dataset) -> Path:  # noqa: F811 - `dataset` is a fixture
    """The reference: one process accumulating 8 micro-batches of 2, uninterrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    assert train(spec_file(tmp, ranks=1), dataset, tmp / "one") == 0
    return tmp / "one"


@pytest.mark.parametrize(("nodes", "per_node"), [(2, 2), (2, 1)], ids=["2x2", "2x1"])
def test_hsdp_matches_one_process_with_accumulation(tmp_path, dataset, one_process, nodes, per_node):  # noqa: F811
    """2x2: a replica per node sharded over its 2 ranks; 2x1 (CPU nodes, one process each): whole replicas.
    The same losses and (clipped, measured over 2-D DTensors) gradient norms as one process."""
    spec = spec_file(tmp_path, ranks=nodes * per_node, nodes=nodes, sharding="hsdp")
    assert train_on_nodes(spec, dataset, tmp_path / "hsdp", nodes, per_node) == [0] * nodes
    one, hsdp = losses(one_process), losses(tmp_path / "hsdp")
    assert one.keys() == hsdp.keys() and len(one) == STEPS
    assert max(abs(one[s] - hsdp[s]) for s in one) < 1e-4
    norms, hsdp_norms = grad_norms(one_process), grad_norms(tmp_path / "hsdp")
    assert sum(norm > CLIP for norm in norms.values()) > STEPS // 2  # clipping acts on most steps
    assert max(abs(norms[s] - hsdp_norms[s]) / norms[s] for s in norms) < 1e-4
    assert one[STEPS] < one[1] - 0.5  # it learns
    recorded = meta(tmp_path / "hsdp", STEPS)
    expected = (nodes * per_node, "hsdp", [nodes, per_node])
    assert (recorded["worldSize"], recorded["sharding"], recorded["mesh"]) == expected


def test_an_hsdp_checkpoint_resumes_under_fsdp_and_one_process(tmp_path, dataset, one_process):  # noqa: F811
    """HSDP 2x2 to step 8, 2-rank FSDP to step 16, one process to the end: the losses after each resume
    match the uninterrupted run (RNG states are restored only at the saving world size; none is drawn)."""
    checkpoints = tmp_path / "moved"
    hsdp = spec_file(tmp_path, ranks=4, nodes=2, sharding="hsdp")
    assert train_on_nodes(hsdp, dataset, checkpoints, 2, 2, "--stop-at-step", "8") == [0, 0]
    assert meta(checkpoints, 8)["mesh"] == [2, 2]
    assert train_on_nodes(spec_file(tmp_path, ranks=2), dataset, checkpoints, 1, 2, "--stop-at-step", "16") == [0]
    assert (meta(checkpoints, 16)["sharding"], meta(checkpoints, 16)["mesh"]) == ("fsdp", [2])
    assert train(spec_file(tmp_path, ranks=1), dataset, checkpoints) == 0
    reference, moved = losses(one_process), losses(checkpoints)
    assert [record["step"] for record in metrics(checkpoints)] == list(range(1, STEPS + 1))  # each resumed
    assert max(abs(reference[s] - moved[s]) for s in moved) < 1e-4

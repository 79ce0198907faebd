"""`llmtrain train` on 1, 2 and 4 ranks of this machine's CPUs: FSDP over every rank, and HSDP as 2 "nodes"
of 2 ranks (two torchrun launches with --nnodes=2 --node-rank=i, as the operator's pods run them).

The model (~30M parameters: 8 layers, width 512, the example's 4096-token vocabulary, sequences of 256)
and the global batch (8 sequences, 2048 tokens a step: micro-batch 2, accumulated 4, 2 or 1 times) are
the same in every layout, so the losses agree and the rates compare. Per layout: the median tokens/s and
step time over the steps after `--warmup` (from the trainer's metrics.jsonl, validation and checkpoints
left out), the final loss, and each rank's peak resident set (VmHWM, sampled from /proc; it counts the
shared libraries and the memory-mapped shards in every rank). The layouts run in turn, `--rounds` times
(each figure is the median over the rounds, each round's kept with the load average when it started), so
a neighbour's load on a shared machine falls on every layout alike. Ranks beyond the cores are oversubscribed:
each rank runs 1 thread (torch's threads are the cores divided by a node's ranks), so 4 ranks on 2 cores
time-share them and add gloo's collectives on top.

    python bench/train_scaling.py [--steps 6] [--warmup 2] [--rounds 2] > bench/results/train_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"layers": 8, "hiddenSize": 512, "heads": 8, "kvHeads": 8, "intermediateSize": 1376, "maxSeqLen": 256}
MICRO_BATCH, GLOBAL_SEQUENCES = 2, 8
#: name: (nodes, ranks per node, sharding)
LAYOUTS = {
    "one_process": (1, 1, "fsdp"),
    "fsdp_2": (1, 2, "fsdp"),
    "fsdp_4": (1, 4, "fsdp"),
    "hsdp_2x2": (2, 2, "hsdp"),
}


class PeakRss:
    """The peak resident set (VmHWM) of every training rank, by pid: a watched process that is the trainer,
    or torchrun's workers (its children; a rank's own forks are not ranks)."""

    def __init__(self, roots: list[int], interval_s: float = 0.2) -> None:
        self.roots, self.interval_s, self.peaks = roots, interval_s, {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            for pid in (rank for root in self.roots for rank in [root, *children(root)]):
                peak = _vm_hwm(pid)
                if peak:
                    self.peaks[pid] = max(peak, self.peaks.get(pid, 0))

    def stop(self) -> list[int]:
        self._stopped.set()
        self._thread.join()
        return sorted(self.peaks.values())


def children(pid: int) -> list[int]:
    try:
        return [
            int(child) for path in Path(f"/proc/{pid}/task").glob("*/children") for child in path.read_text().split()
        ]
    except OSError:
        return []


def _vm_hwm(pid: int) -> int:
    """A training rank's peak RSS in bytes; 0 for any other process (torchrun's agent) or one gone."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"llmtrain.cli" not in arguments or b"torch.distributed.run" in arguments:
            return 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_spec(work: Path, steps: int, nodes: int, ranks: int, sharding: str) -> Path:
    """examples/run.yaml's DataSource; a ~30M-parameter run with the global batch of every layout."""
    source = next(yaml.safe_load_all((ROOT / "examples/run.yaml").read_text()))
    source["spec"]["sources"][0]["local"]["path"] = str(ROOT / "examples/data/shakespeare/*.txt")
    run = {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "scaling"},
        "spec": {
            "dataSourceRef": {"name": source["metadata"]["name"]},
            "model": MODEL,
            "training": {
                "maxSteps": steps,
                "microBatchSize": MICRO_BATCH,
                "gradientAccumulationSteps": GLOBAL_SEQUENCES // (MICRO_BATCH * ranks),
                "precision": "fp32",
                "logEverySteps": 1,
                "scheduler": {"warmupSteps": 1},
            },
            "validation": {"everySteps": steps, "batches": 1},
            "checkpointing": {"everySteps": steps, "keepLast": 1, "keepBest": 0},
            "resources": {"nodes": nodes, "sharding": sharding},
        },
    }
    path = work / f"run-{nodes}x{ranks // nodes}-{sharding}.yaml"
    path.write_text(yaml.safe_dump_all([source, run]))
    return path


def launches(spec: Path, data: Path, work: Path, nodes: int, per_node: int) -> list[list[str]]:
    """One command a node: the trainer itself for one process, else torchrun (`--node-rank` per node)."""
    name = spec.stem
    trainer = ["-m", "llmtrain.cli", "train", "-f", str(spec), "--name", "scaling", "--data", str(data)]
    trainer += ["--checkpoints", str(work / f"{name}-checkpoints"), "--metrics-dir", str(work / f"{name}-metrics")]
    if nodes * per_node == 1:
        return [[sys.executable, *trainer]]
    port = free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc-per-node={per_node}"]
    rendezvous = ["--master-addr=127.0.0.1", f"--master-port={port}", "--max-restarts=0"]
    return [[*torchrun, f"--node-rank={node}", *rendezvous, *trainer] for node in range(nodes)]


def measure(spec: Path, data: Path, work: Path, nodes: int, per_node: int, warmup: int) -> dict:
    """Train one layout; its rates from metrics.jsonl and its ranks' peak RSS."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for command in launches(spec, data, work, nodes, per_node)
    ]
    rss = PeakRss([process.pid for process in processes])
    errors = [process.communicate(timeout=3600)[1] for process in processes]
    peaks = rss.stop()
    for process, stderr in zip(processes, errors, strict=True):
        if process.returncode:
            raise RuntimeError(f"{spec.name}: exit {process.returncode}\n{stderr[-3000:]}")
    records = [json.loads(line) for line in (work / f"{spec.stem}-metrics" / "metrics.jsonl").read_text().splitlines()]
    rates = [record["tokensPerSecond"] for record in records[warmup:]]
    tokens_per_step = GLOBAL_SEQUENCES * MODEL["maxSeqLen"]
    rate = statistics.median(rates)
    return {
        "tokens_per_s": round(rate),
        "step_s": round(tokens_per_step / rate, 2),
        "final_loss": round(records[-1]["loss"], 5),
        "peak_rss_mib_per_rank": [round(peak / 2**20) for peak in peaks],
        "wall_s": round(time.perf_counter() - started, 1),
    }


def summary(nodes: int, per_node: int, rounds: list[dict]) -> dict:
    """A layout's medians over its rounds, and the rounds themselves."""
    return {
        "ranks": nodes * per_node,
        "mesh": [nodes, per_node] if nodes > 1 else [per_node],
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rounds)),
        "step_s": round(statistics.median(r["step_s"] for r in rounds), 2),
        "final_loss": rounds[0]["final_loss"],
        "peak_rss_mib_per_rank": max((r["peak_rss_mib_per_rank"] for r in rounds), key=max),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="times each layout runs, in turn with the others")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the rates")
    parser.add_argument("--only", choices=sorted(LAYOUTS), action="append", help="these layouts (default: all)")
    args = parser.parse_args()
    results: dict = {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_before": [round(load, 2) for load in os.getloadavg()],
        "model": MODEL,
        "global_batch": {"sequences": GLOBAL_SEQUENCES, "tokens": GLOBAL_SEQUENCES * MODEL["maxSeqLen"]},
        "steps": args.steps,
        "warmup_steps": args.warmup,
    }
    layouts = {name: layout for name, layout in LAYOUTS.items() if not args.only or name in args.only}
    rounds: dict[str, list[dict]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        data = work / "data"
        first = write_spec(work, args.steps, 1, 1, "fsdp")
        cli = [sys.executable, "-m", "llmtrain.cli"]
        subprocess.run([*cli, "ingest", "-f", str(first), "--output", str(data)], check=True, capture_output=True)
        for index in range(args.rounds):
            for name, (nodes, per_node, sharding) in layouts.items():
                spec = write_spec(work, args.steps, nodes, nodes * per_node, sharding)
                shutil.rmtree(work / f"{spec.stem}-checkpoints", ignore_errors=True)  # each round from step 0
                shutil.rmtree(work / f"{spec.stem}-metrics", ignore_errors=True)
                load = round(os.getloadavg()[0], 2)
                rounds[name].append({"load_average": load, **measure(spec, data, work, nodes, per_node, args.warmup)})
                print(f"round {index + 1} {name}: {rounds[name][-1]}", file=sys.stderr)
    for name, (nodes, per_node, _) in layouts.items():
        results[name] = summary(nodes, per_node, rounds[name])
    base = results.get("one_process", {}).get("tokens_per_s")
    for name in LAYOUTS:
        if base and name in results and name != "one_process":
            results[name]["vs_one_process"] = round(results[name]["tokens_per_s"] / base, 3)
    results["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

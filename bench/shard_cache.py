"""Trainers reading an S3 dataset in place: bytes fetched per rank and per node, and step time with a
cold and a warm block cache.

A synthetic dataset (random token ids below 512, uint16) is written to a local SeaweedFS with the
manifest `llmtrain ingest` writes (per-block SHA-256). The workload tests' tiny model then trains on it
with 2 gloo ranks under torchrun (one node: the ranks share `$LLMTRAIN_CACHE_DIR/shards`), twice: on an
empty cache (cold) and again on the cache the first run filled (warm; the same steps read the same
windows). Each rank writes what it fetched to `shards/stats/rank-<r>.json`; the step time is the median
gap between consecutive steps in the metrics JSONL (step 1 left out: it includes start-up).

    python bench/shard_cache.py [--train-mib 256] [--steps 8] [--block-kib 4096 1024]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmtrain import storage
from llmtrain.data import shards as shard_format
from llmtrain.data.shards import ShardWriter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.seaweed import Seaweed  # noqa: E402
from support.tiny_run import tiny_run  # noqa: E402

SHARD_MIB = 64
RANKS = 2


def write_dataset(uri: str, train_bytes: int, staging: Path) -> int:
    """Random tokens in 64 MiB shards (a 4 MiB validation split) and the manifest; the shards' bytes."""
    rng = np.random.default_rng(0)
    shard_tokens = SHARD_MIB << 19
    splits: dict[str, Any] = {}
    for split, size in (("train", train_bytes), ("validation", 4 << 20)):
        writer = ShardWriter(split, uri, np.dtype(np.uint16), shard_tokens, staging)
        for start in range(0, size // 2, shard_tokens):
            writer.add(rng.integers(0, 512, size=min(shard_tokens, size // 2 - start), dtype=np.uint16))
        writer.close()
        splits[split] = {"documents": 1, "tokens": writer.tokens, "shards": [s.to_json() for s in writer.shards]}
    manifest = {
        "version": 1,
        "kind": "llmtrain.dev/dataset",
        "name": "bench",
        "dtype": "uint16",
        "tokenizer": {"type": "bpe", "vocabSize": 512, "path": "tokenizer", "files": []},
        "eosId": 0,
        "splits": splits,
    }
    storage.write_bytes(storage.join(uri, "manifest.json"), json.dumps(manifest).encode())
    return sum(s["tokens"] * 2 for split in splits.values() for s in split["shards"])


def train(work: Path, name: str, data: str, steps: int, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    """One 2-rank run on `cache`: what each rank fetched and the median step time."""
    spec = tiny_run("bench", "bench", steps, micro=4, accumulation=1, validation={"everySteps": 1000})
    spec["spec"]["checkpointing"]["everySteps"] = 1000
    (work / "run.yaml").write_text(yaml.safe_dump(spec))
    checkpoints, metrics = work / f"{name}-checkpoints", work / f"{name}-metrics"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}"]
    command += ["-m", "llmtrain.cli", "train", "-f", str(work / "run.yaml"), "--data", data]
    command += ["--checkpoints", str(checkpoints), "--metrics-dir", str(metrics)]
    command += ["--progress", str(work / f"{name}-progress.json")]
    run_env = {**os.environ, **env, "LLMTRAIN_CACHE_DIR": str(cache)}
    process = subprocess.run(command, capture_output=True, text=True, env=run_env, timeout=600)
    if process.returncode != 0:
        raise SystemExit(f"{name}: exit {process.returncode}\n{process.stderr[-3000:]}")
    times = [json.loads(line)["time"] for line in (metrics / "metrics.jsonl").read_text().splitlines()]
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    stats = [json.loads((cache / "shards" / "stats" / f"rank-{r}.json").read_text()) for r in range(RANKS)]
    return {
        "bytes_fetched_per_rank": [s["bytes_fetched"] for s in stats],
        "bytes_fetched_node": sum(s["bytes_fetched"] for s in stats),
        "blocks_hit_per_rank": [s["blocks_hit"] for s in stats],
        "median_step_seconds": round(statistics.median(gaps), 4),
        "max_step_seconds": round(max(gaps), 4),
        "steps_2_to_last_seconds": round(sum(gaps), 3),
    }


def measure(work: Path, train_mib: int, steps: int, block_kib: int, env: dict[str, str]) -> dict[str, Any]:
    shard_format.BLOCK_BYTES = block_kib << 10  # the manifest records it; readers follow the manifest
    uri = f"s3://bench/blocks-{block_kib}k"
    size = write_dataset(uri, train_mib << 20, work / "staging")
    cache = work / f"cache-{block_kib}k"
    cold = train(work, f"cold-{block_kib}k", uri, steps, cache, env)
    warm = train(work, f"warm-{block_kib}k", uri, steps, cache, env)
    return {
        "block_bytes": block_kib << 10,
        "dataset_bytes": size,
        "windows_read": steps * 4 * RANKS,
        "cold": {**cold, "node_fraction_of_dataset": round(cold["bytes_fetched_node"] / size, 4)},
        "warm": warm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-mib", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--block-kib", type=int, nargs="+", default=[4096, 1024])
    args = parser.parse_args()
    weed = Seaweed()
    try:
        server = weed.start()
        server.client().create_bucket(Bucket="bench")
        os.environ.update(server.env())
        with tempfile.TemporaryDirectory(prefix="llmtrain-shard-cache-") as directory:
            results = [
                measure(Path(directory), args.train_mib, args.steps, kib, server.env()) for kib in args.block_kib
            ]
    finally:
        weed.close()
    print(json.dumps({"ranks": RANKS, "steps": args.steps, "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""GPU benchmark: a ~124M-parameter Llama (GPT-2 small's shape) on one GPU, bf16, torch.compile,
through `llmtrain train` itself. Prints tokens/s and MFU (against the peak table in
llmtrain/model/flops.py) with the GPU's name. Under 8 minutes on an H100; llm.c reaches ~40% MFU.

    python bench/gpu.py [--steps 60]        (or: bash bench/gpu.sh)

The data are random tokens written as a dataset manifest: throughput does not depend on the text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

VOCAB, SEQ = 32768, 1024


def random_dataset(root: Path, tokens: int) -> None:
    for split, count in (("train", tokens), ("validation", tokens // 50)):
        (root / split).mkdir(parents=True)
        np.random.default_rng(0).integers(4, VOCAB, count, dtype=np.uint16).tofile(root / split / "shard-00000.bin")
    manifest = {
        "version": 1,
        "dtype": "uint16",
        "eosId": 1,
        "tokenizer": {"type": "bpe", "vocabSize": VOCAB, "path": "tokenizer", "files": []},
        "splits": {
            split: {
                "documents": 1,
                "tokens": count,
                "shards": [{"path": f"{split}/shard-00000.bin", "tokens": count, "sha256": ""}],
            }
            for split, count in (("train", tokens), ("validation", tokens // 50))
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro-batch", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no GPU: this benchmark needs one")
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        random_dataset(root / "data", 50_000_000)
        spec = {
            "apiVersion": "llmtrain.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": "gpu-bench"},
            "spec": {
                "dataSourceRef": {"name": "random"},
                "model": {"layers": 12, "hiddenSize": 768, "heads": 12, "maxSeqLen": SEQ, "intermediateSize": 2048},
                "training": {
                    "maxSteps": args.steps,
                    "microBatchSize": args.micro_batch,
                    "precision": "bf16",
                    "compile": True,
                    "logEverySteps": 5,
                    "scheduler": {"warmupSteps": 5},
                },
                "validation": {"everySteps": 100000, "batches": 1},
                "checkpointing": {"everySteps": 100000, "keepLast": 1},
                "resources": {"gpusPerNode": 1},
            },
        }
        (root / "run.yaml").write_text(yaml.safe_dump(spec))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "llmtrain.cli",
                "train",
                "-f",
                str(root / "run.yaml"),
                "--data",
                str(root / "data"),
                "--checkpoints",
                str(root / "ckpt"),
                "--metrics-dir",
                str(root / "m"),
            ],
            check=True,
            env={**__import__("os").environ, "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor")},
        )
        records = [json.loads(line) for line in (root / "m" / "metrics.jsonl").read_text().splitlines()]
        steady = [r for r in records if "tokensPerSecond" in r][2:]  # past compilation
        print(
            json.dumps(
                {
                    "gpu": torch.cuda.get_device_name(),
                    "parameters": "~124M (12 x 768, vocab 32768)",
                    "tokens_per_s": round(statistics.median(r["tokensPerSecond"] for r in steady)),
                    "mfu": round(statistics.median(r["mfu"] for r in steady if r.get("mfu")), 4),
                    "memory_mib": round(max(r["memoryMiB"] for r in steady)),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

"""GPU benchmark: a ~124M-parameter Llama (GPT-2 small's shape) on one GPU, bf16, through
`llmtrain train` itself. Prints tokens/s, MFU (against the peak table in llmtrain/model/flops.py) and peak
memory with the GPU's name, for each variant measured in the same run:

- `compile`:          torch.compile per block (the configuration to quote; llm.c reaches ~40% MFU)
- `eager`:            the baseline the compile speed-up is measured against
- `compile+ac`:       with activation checkpointing (memory saved vs throughput lost)

then reproducibility on the GPU, with default and with deterministic kernels (`training.deterministic`):
an uninterrupted run against a repeat of itself and against a run stopped at a checkpoint and resumed
(the loss at every step after the resume, and the final weights).

    python bench/gpu.py [--steps 60] [--variants compile,eager] [--out DIR]        (or: bash bench/gpu.sh)
    python bench/gpu.py --tiny                          (a CPU smoke test of this script: tiny model)

The data are random tokens written as a dataset manifest: throughput does not depend on the text.
Each variant runs in its own process; one that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

VARIANTS: dict[str, dict[str, Any]] = {
    "compile": {"compile": True},
    "eager": {"compile": False},
    "compile+ac": {"compile": True, "activationCheckpointing": True},
}


def random_dataset(root: Path, vocab: int, tokens: int) -> None:
    """Uniform random token shards and the manifest `llmtrain train` reads."""
    splits = {"train": tokens, "validation": max(tokens // 50, 65536)}
    for split, count in splits.items():
        (root / split).mkdir(parents=True)
        np.random.default_rng(0).integers(4, vocab, count, dtype=np.uint16).tofile(root / split / "shard-00000.bin")
    manifest = {
        "version": 1,
        "dtype": "uint16",
        "eosId": 1,
        "tokenizer": {"type": "bpe", "vocabSize": vocab, "path": "tokenizer", "files": []},
        "splits": {
            split: {
                "documents": 1,
                "tokens": count,
                "shards": [{"path": f"{split}/shard-00000.bin", "tokens": count, "sha256": ""}],
            }
            for split, count in splits.items()
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest))


def run_spec(model: dict[str, int], training: dict[str, Any], checkpoint_every: int, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "gpu-bench"},
        "spec": {
            "dataSourceRef": {"name": "random"},
            "model": model,
            "training": {"precision": "bf16", "logEverySteps": 5, "scheduler": {"warmupSteps": 5}, **training},
            "validation": {"everySteps": 100000, "batches": 1},
            "checkpointing": {"everySteps": checkpoint_every, "keepLast": 2, "keepBest": 0},
            "resources": {"gpusPerNode": gpus},
        },
    }


def train(work: Path, name: str, spec: dict[str, Any], data: Path, log_dir: Path, *extra: str) -> Path:
    """`llmtrain train` in a fresh process; returns its checkpoint directory. Raises on failure."""
    run_dir = work / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.yaml").write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "llmtrain.cli", "train", "-f", str(run_dir / "run.yaml"), "--data", str(data)]
    command += ["--checkpoints", str(run_dir / "ckpt"), "--metrics-dir", str(run_dir / "metrics"), *extra]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"), "PYTHONUNBUFFERED": "1"}
    with open(log_dir / "runs.log", "a") as log:
        log.write(f"=== {name}: {' '.join(command[1:])}\n")
        log.flush()
        subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return run_dir


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics" / "metrics.jsonl").read_text().splitlines()]


def throughput(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Medians over the logged intervals after the first two (compilation and warm-up)."""
    steady = [r for r in records if "tokensPerSecond" in r][2:]
    mfus = [r["mfu"] for r in steady if r.get("mfu")]
    return {
        "tokens_per_s": round(statistics.median(r["tokensPerSecond"] for r in steady)),
        "mfu": round(statistics.median(mfus), 4) if mfus else None,
        "peak_memory_mib": round(max(r.get("memoryMiB") or 0 for r in steady)),
        "wall_s": round(seconds, 1),
        "final_loss": round(records[-1]["loss"], 4),
    }


def compare(a: Path, b: Path, after: int) -> dict[str, Any]:
    """Two runs' losses at every step past `after`, and their final weights."""
    by_step = [{r["step"]: r["loss"] for r in metrics(d) if "loss" in r} for d in (a, b)]
    steps = [s for s in by_step[0] if s > after]
    weights = [final_weights(d / "ckpt") for d in (a, b)]
    return {
        "steps_compared": len(steps),
        "losses_bit_exact": all(by_step[0][s] == by_step[1][s] for s in steps),
        "max_abs_loss_difference": max(abs(by_step[0][s] - by_step[1][s]) for s in steps),
        "weights_bit_exact": all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]),
        "max_abs_weight_difference": max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]),
    }


def reproducibility(work: Path, model: dict[str, int], training: dict[str, Any], data: Path, logs: Path, gpus: int):
    """For default and deterministic kernels: an uninterrupted run against a repeat of it, and against a run
    stopped at a checkpoint (--stop-at-step) then resumed; with each one's eager throughput."""
    steps, results = training["maxSteps"], {}
    for mode, deterministic in (("default", False), ("deterministic", True)):
        spec = run_spec(model, {**training, "deterministic": deterministic}, checkpoint_every=steps // 2, gpus=gpus)
        clean = train(work, f"{mode}-clean", spec, data, logs)
        repeat = train(work, f"{mode}-repeat", spec, data, logs)
        split = train(work, f"{mode}-split", spec, data, logs, "--stop-at-step", str(steps // 2))
        train(work, f"{mode}-split", spec, data, logs)
        steady = [r["tokensPerSecond"] for r in metrics(clean) if "tokensPerSecond" in r][5:]
        results[mode] = {
            "tokens_per_s": round(statistics.median(steady)),
            "repeat_vs_uninterrupted": compare(clean, repeat, 0),
            f"resumed_at_{steps // 2}_vs_uninterrupted": compare(clean, split, steps // 2),
        }
    return results


def final_weights(checkpoints: Path) -> dict[str, torch.Tensor]:
    """The model state of the latest checkpoint (DCP converted to one torch.save file)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    latest = (checkpoints / "latest").read_text().strip()
    target = checkpoints.parent / f"{latest}.pt"
    dcp_to_torch_save(str(checkpoints / latest), str(target))
    return torch.load(target, weights_only=False)["model"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--out", type=Path, help="where to write gpu.json and each process's log")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script: a tiny model, no GPU")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.tiny:
        raise SystemExit("no GPU: this benchmark needs one (--tiny runs a CPU smoke test)")
    if args.tiny:
        vocab, model, gpus = 512, {"layers": 2, "hiddenSize": 64, "heads": 4, "maxSeqLen": 64}, 0
        args.steps, args.micro_batch = min(args.steps, 20), min(args.micro_batch, 4)
    else:
        vocab, gpus = 32768, 1
        model = {"layers": 12, "hiddenSize": 768, "heads": 12, "maxSeqLen": 1024, "intermediateSize": 2048}
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (--tiny)",
        "torch": torch.__version__,
        "model": model,
        "micro_batch": args.micro_batch,
        "steps": args.steps,
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        random_dataset(work / "data", vocab, 8_000_000 if not args.tiny else 200_000)
        for name in filter(None, args.variants.split(",")):
            training = {"maxSteps": args.steps, "microBatchSize": args.micro_batch, **VARIANTS[name]}
            if args.tiny:
                training["compile"] = False
            started = time.perf_counter()
            try:
                run_dir = train(work, name, run_spec(model, training, 100000, gpus), work / "data", out)
                results["variants"][name] = throughput(metrics(run_dir), time.perf_counter() - started)
            except Exception as error:  # report it and measure the rest
                results["variants"][name] = {"error": repr(error)}
            print(name, json.dumps(results["variants"][name]), flush=True)
            (out / "gpu.json").write_text(json.dumps(results, indent=2))
        training = {
            "maxSteps": 40 if not args.tiny else 12,
            "microBatchSize": args.micro_batch,
            "compile": False,
            "logEverySteps": 1,
        }
        try:
            results["reproducibility"] = reproducibility(work, model, training, work / "data", out, gpus)
        except Exception as error:
            results["reproducibility"] = {"error": repr(error)}
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

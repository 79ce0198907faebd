"""GPU benchmark: a ~124M-parameter Llama (GPT-2 small's shape) on one GPU, through `llmtrain train` itself,
and torchtitan on the same card for comparison. Each measurement is its own process; one that fails is
reported and the others still run. Sections, in the order they run (`--sections`, default the first four):

- `llmtrain`:        bf16, torch.compile: tokens/s, MFU (vs the peak table in llmtrain/model/flops.py), memory
- `torchtitan`:      torchtitan's Trainer at the same shape, batch and data (bench/gpu_torchtitan.py): tokens/s
                     and MFU by the same FLOPs formula, and the ratio llmtrain / torchtitan
- `fp16`:            `precision: fp16` (dynamic loss scaling), compiled: tokens/s, the loss against bf16's at the
                     same steps, skipped steps, the final loss scale
- `checkpoint`:      a checkpoint every `--checkpoint-every` steps, `asyncSave` false then true: how long the
                     training loop stalls at each save (step wall times from the metrics, every step logged)
- `eager`, `compile+ac`: bf16 without compile; with activation checkpointing
- `reproducibility`: default and deterministic kernels, a repeat and a stop/resume against an uninterrupted run

    bash bench/gpu.sh                              (the device command: installs the carried wheels, then this)
    python bench/gpu.py [--steps 60] [--sections llmtrain,torchtitan] [--out DIR]
    python bench/gpu.py --tiny                     (a CPU smoke test of this script: tiny model, a few steps)

The data are synthetic tokens written as a dataset manifest, learnable so that the loss falls (every second
token is a fixed function of the one before it); throughput does not depend on the text. Results: DIR/gpu.json,
DIR/summary.md (the table printed at the end), DIR/runs.log (every process's output).
"""

from __future__ import annotations

import argparse
import hashlib
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

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("llmtrain", "torchtitan", "fp16", "checkpoint", "eager", "compile+ac", "reproducibility")
DEFAULT_SECTIONS = "llmtrain,torchtitan,fp16,checkpoint"
MIN_PROCESS_SECONDS = 30  # less left of the budget: the next process is not started
THROUGHPUT: dict[str, dict[str, Any]] = {  # section -> spec.training
    "llmtrain": {"compile": True},
    "fp16": {"compile": True, "precision": "fp16"},
    "eager": {"compile": False},
    "compile+ac": {"compile": True, "activationCheckpointing": True},
}


def learnable_tokens(vocab: int, count: int, seed: int) -> np.ndarray:
    """Uniform tokens where every odd position is a fixed random function of the token before it: half the
    positions are predictable, so the loss falls from ln(vocab) towards about half of it."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, vocab, count, dtype=np.uint16)
    successor = rng.integers(4, vocab, vocab, dtype=np.uint16)
    tokens[1::2] = successor[tokens[0::2][: len(tokens[1::2])]]
    return tokens


def write_dataset(root: Path, vocab: int, tokens: int) -> Path:
    """The token shards and the manifest `llmtrain train` reads; returns the train shard."""
    splits = {"train": tokens, "validation": max(tokens // 50, 65536)}
    shards = {}
    for seed, (split, count) in enumerate(splits.items()):
        (root / split).mkdir(parents=True)
        path = root / split / "shard-00000.bin"
        learnable_tokens(vocab, count, seed).tofile(path)
        shards[split] = {"path": f"{split}/shard-00000.bin", "tokens": count, "sha256": sha256(path)}
    manifest = {
        "version": 1,
        "dtype": "uint16",
        "eosId": 1,
        "tokenizer": {"type": "bpe", "vocabSize": vocab, "path": "tokenizer", "files": []},
        "splits": {split: {"documents": 1, "tokens": splits[split], "shards": [shards[split]]} for split in splits},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text(json.dumps(word_level_tokenizer(vocab)))
    return root / "train" / "shard-00000.bin"


def word_level_tokenizer(vocab: int) -> dict[str, Any]:
    """A tokenizer.json (the tokenizers library's format) with `vocab` ids named t0, t1, ...: the trainer
    records its vocabulary's hash; nothing here encodes text."""
    return {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {f"t{i}": i for i in range(vocab)}, "unk_token": "t0"},
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_spec(
    model: dict[str, int], training: dict[str, Any], gpus: int, checkpointing: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "gpu-bench"},
        "spec": {
            "dataSourceRef": {"name": "random"},
            "model": model,
            "training": {"precision": "bf16", "logEverySteps": 5, "scheduler": {"warmupSteps": 5}, **training},
            "validation": {"everySteps": 100000, "batches": 1},
            "checkpointing": {"everySteps": 100000, "keepLast": 2, "keepBest": 0, **(checkpointing or {})},
            "resources": {"gpusPerNode": gpus},
        },
    }


class Bench:
    """Where the runs happen: the work directory, the dataset, the log every process writes to."""

    def __init__(self, work: Path, out: Path, data: Path, timeout: float, budget: float) -> None:
        self.work, self.out, self.data, self.timeout = work, out, data, timeout
        self.deadline = time.monotonic() + budget  # no process runs past it: the device's minutes are counted
        self.env = {
            **os.environ,
            "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),  # shared: later runs reuse the compiled graphs
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "trainer"), os.environ.get("PYTHONPATH")])),
        }

    def process(self, name: str, command: list[str]) -> None:
        """One process, its output appended to runs.log; raises with its last lines on failure or timeout."""
        timeout = min(self.timeout, self.deadline - time.monotonic())
        if timeout < MIN_PROCESS_SECONDS:
            raise RuntimeError(f"{name}: not run, the time budget (--budget) is spent")
        with open(self.out / "runs.log", "a") as log:
            log.write(f"=== {name}: {' '.join(command[1:])}\n")
            log.flush()
            start = log.tell()
            try:
                done = subprocess.run(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
                code = "ok" if done.returncode == 0 else f"exit {done.returncode}"
            except subprocess.TimeoutExpired:
                code = f"killed after {timeout:.0f} s"
        if code == "ok":
            return
        tail = (self.out / "runs.log").read_bytes()[start:].decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{name}: {code}: {' / '.join(tail)[-400:]}")

    def train(self, name: str, spec: dict[str, Any], *extra: str) -> Path:
        """`llmtrain train` in a fresh process; returns its run directory."""
        run_dir = self.work / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.yaml").write_text(yaml.safe_dump(spec))
        command = [sys.executable, "-m", "llmtrain.cli", "train", "-f", str(run_dir / "run.yaml")]
        command += ["--data", str(self.data), "--checkpoints", str(run_dir / "ckpt")]
        self.process(name, [*command, "--metrics-dir", str(run_dir / "metrics"), *extra])
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
        "first_loss": round(records[0]["loss"], 4),
        "final_loss": round(records[-1]["loss"], 4),
        "losses": {r["step"]: round(r["loss"], 6) for r in records if "loss" in r},
    }


def fp16_figures(records: list[dict[str, Any]], bf16: dict[str, Any] | None) -> dict[str, Any]:
    """What says fp16 trains: its loss falls, how many steps the scaler skipped, the scale it settled on,
    and its loss against bf16's at the same steps (same data, same seed)."""
    last = records[-1]
    figures: dict[str, Any] = {
        "loss_fell": records[-1]["loss"] < records[0]["loss"],
        "skipped_steps": last.get("skippedSteps"),
        "final_loss_scale": last.get("lossScale"),
    }
    if bf16 and "losses" in bf16:
        shared = [r for r in records if "loss" in r and r["step"] in bf16["losses"]]
        if shared:
            figures["max_abs_loss_difference_vs_bf16"] = round(
                max(abs(r["loss"] - bf16["losses"][r["step"]]) for r in shared), 6
            )
    return figures


def checkpoint_stalls(records: list[dict[str, Any]], every: int, total: int) -> dict[str, Any]:
    """From every step's metrics record (wall time `time`): the interval that holds a save (after step s,
    before step s + 1 is logged) less the median step interval, for each save before the last step; and the
    extra time of the three steps after it (a background write competing with training)."""
    times = {r["step"]: r["time"] for r in records if "time" in r}
    intervals = {s: times[s] - times[s - 1] for s in times if s - 1 in times}
    saves = [s for s in range(every, total, every) if s + 4 in intervals]
    near_save = {s + k for s in saves for k in range(1, 5)}
    baseline = statistics.median(v for s, v in intervals.items() if s > 5 and s not in near_save)
    stalls = [intervals[s + 1] - baseline for s in saves]
    after = [sum(intervals[s + k] - baseline for k in (2, 3, 4)) for s in saves]
    reported = sorted({key for r in records for key in r if "checkpoint" in key.lower() or "save" in key.lower()})
    return {
        "step_s": round(baseline, 4),
        "saves": saves,
        "stall_s": [round(s, 3) for s in stalls],
        "median_stall_s": round(statistics.median(stalls), 3) if stalls else None,
        "next_3_steps_extra_s": [round(s, 3) for s in after],
        "trainer_reported": {key: [r[key] for r in records if key in r] for key in reported},
    }


def reproducibility(bench: Bench, model: dict[str, int], training: dict[str, Any], gpus: int) -> dict[str, Any]:
    """For default and deterministic kernels: an uninterrupted run against a repeat of it, and against a run
    stopped at a checkpoint (--stop-at-step) then resumed; with each one's eager throughput."""
    steps, results = training["maxSteps"], {}
    for mode, deterministic in (("default", False), ("deterministic", True)):
        checkpointing = {"everySteps": steps // 2}
        spec = run_spec(model, {**training, "deterministic": deterministic}, gpus, checkpointing)
        clean = bench.train(f"{mode}-clean", spec)
        repeat = bench.train(f"{mode}-repeat", spec)
        split = bench.train(f"{mode}-split", spec, "--stop-at-step", str(steps // 2))
        bench.train(f"{mode}-split", spec)
        steady = [r["tokensPerSecond"] for r in metrics(clean) if "tokensPerSecond" in r][5:]
        results[mode] = {
            "tokens_per_s": round(statistics.median(steady)),
            "repeat_vs_uninterrupted": compare(clean, repeat, 0),
            f"resumed_at_{steps // 2}_vs_uninterrupted": compare(clean, split, steps // 2),
        }
    return results


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


def final_weights(checkpoints: Path) -> dict[str, torch.Tensor]:
    """The model state of the latest checkpoint (DCP converted to one torch.save file)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    latest = (checkpoints / "latest").read_text().strip()
    target = checkpoints.parent / f"{latest}.pt"
    dcp_to_torch_save(str(checkpoints / latest), str(target))
    return torch.load(target, weights_only=False)["model"]


def torchtitan(bench: Bench, train_shard: Path, vocab: int, args: argparse.Namespace) -> dict[str, Any]:
    """bench/gpu_torchtitan.py in its own process, on the same token file; if torchtitan's default CUDA-graph
    capture fails, once more without it (the first error recorded)."""
    result = bench.out / "torchtitan.json"
    command = [sys.executable, str(ROOT / "bench" / "gpu_torchtitan.py"), "--tokens", str(train_shard)]
    command += ["--vocab", str(vocab), "--out", str(result), "--steps", str(args.steps)]
    command += ["--batch", str(args.micro_batch), *(["--tiny"] if args.tiny else [])]
    first_error = None
    try:
        bench.process("torchtitan", command)
    except RuntimeError as error:
        if args.tiny or "not run" in str(error) or "ImportError" in str(error) or not titan_has_cuda_graphs():
            raise
        first_error = str(error)
        bench.process("torchtitan-no-cuda-graphs", [*command, "--no-cuda-graphs"])
    figures = json.loads(result.read_text())
    figures.pop("logged", None)
    return {**figures, **({"error_with_cuda_graphs": first_error} if first_error else {})}


def titan_has_cuda_graphs() -> bool:
    """Whether the installed torchtitan captures CUDA graphs by default (0.3 on)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("torchtitan").split(".")[1]) >= 3 or not version("torchtitan").startswith("0.")
    except (PackageNotFoundError, ValueError, IndexError):
        return False


def measure(bench: Bench, section: str, args: argparse.Namespace, setup: dict[str, Any], results: dict[str, Any]):
    """One section's figures (raises when its process failed)."""
    model, gpus, steps = setup["model"], setup["gpus"], args.steps
    if section in THROUGHPUT:
        training = {"maxSteps": steps, "microBatchSize": args.micro_batch, **THROUGHPUT[section]}
        if args.tiny:
            training["compile"] = False
        started = time.perf_counter()
        records = metrics(bench.train(section, run_spec(model, training, gpus)))
        figures = throughput(records, time.perf_counter() - started)
        if section == "fp16":
            figures.update(fp16_figures(records, results.get("llmtrain")))
        return figures
    if section == "torchtitan":
        figures = torchtitan(bench, setup["train_shard"], setup["vocab"], args)
        ours = results.get("llmtrain", {}).get("tokens_per_s")
        if ours and figures.get("tokens_per_s"):
            figures["llmtrain_vs_torchtitan"] = round(ours / figures["tokens_per_s"], 3)
        return figures
    if section == "checkpoint":
        every = args.checkpoint_every
        training = {"maxSteps": steps, "microBatchSize": args.micro_batch, "compile": not args.tiny}
        training["logEverySteps"] = 1
        figures: dict[str, Any] = {}
        for mode, async_save in (("sync", False), ("async", True)):
            spec = run_spec(model, training, gpus, {"everySteps": every, "asyncSave": async_save})
            try:  # one mode failing leaves the other's figures
                records = metrics(bench.train(f"checkpoint-{mode}", spec))
                figures[mode] = {"async_save": async_save, **checkpoint_stalls(records, every, steps)}
            except Exception as error:
                figures[mode] = {"async_save": async_save, "error": repr(error)}
        figures["checkpoint_bytes"] = checkpoint_bytes(bench.work / "checkpoint-sync" / "ckpt")
        return figures
    if section == "reproducibility":
        training = {"maxSteps": 40 if not args.tiny else 12, "microBatchSize": args.micro_batch, "compile": False}
        return reproducibility(bench, model, {**training, "logEverySteps": 1}, gpus)
    raise ValueError(f"unknown section {section!r}: one of {', '.join(SECTIONS)}")


def checkpoint_bytes(checkpoints: Path) -> int | None:
    """The size of the latest checkpoint (model and optimizer state)."""
    latest = checkpoints / "latest"
    if not latest.exists():
        return None
    return sum(f.stat().st_size for f in (checkpoints / latest.read_text().strip()).rglob("*") if f.is_file())


def summary(results: dict[str, Any]) -> str:
    """The Markdown table the run ends with (what docs/benchmarks.md quotes)."""
    rows = ["| measurement | tokens/s | MFU | peak memory | notes |", "|---|---:|---:|---:|---|"]
    for name, figures in results["sections"].items():
        if "error" in figures:
            rows.append(f"| {name} | — | — | — | failed: {figures['error'][-300:]} |")
            continue
        if name == "checkpoint":
            for mode in ("sync", "async"):
                f = figures[mode]
                if "error" in f:
                    rows.append(f"| checkpoint, {mode} | — | — | — | failed: {f['error'][-300:]} |")
                    continue
                rows.append(
                    f"| checkpoint, asyncSave {str(f['async_save']).lower()} | — | — | — | stall per save"
                    f" {f['stall_s']} s (median {f['median_stall_s']} s; a step {f['step_s']} s); next 3 steps"
                    f" {f['next_3_steps_extra_s']} s extra; {figures['checkpoint_bytes'] or 0:,} bytes |"
                )
            continue
        if name == "reproducibility":
            rows.append(f"| reproducibility | — | — | — | {json.dumps(figures)[:300]} |")
            continue
        notes = f"loss {figures.get('first_loss')} → {figures.get('final_loss')}"
        if name == "fp16":
            notes += (
                f"; skipped steps {figures.get('skipped_steps')}, loss scale {figures.get('final_loss_scale')},"
                f" max |loss − bf16 loss| {figures.get('max_abs_loss_difference_vs_bf16')}"
            )
        if name == "torchtitan":
            notes += (
                f"; {figures.get('engine')}, attention {figures.get('attention')}, CUDA graphs"
                f" {figures.get('cuda_graphs')}, its own MFU {figures.get('titan_mfu_percent')}%;"
                f" llmtrain / torchtitan = {figures.get('llmtrain_vs_torchtitan')}"
            )
        rate = f"{figures['tokens_per_s']:,}" if figures.get("tokens_per_s") else "n/a"
        mfu = f"{figures['mfu']:.1%}" if figures.get("mfu") else "n/a"
        memory = f"{figures['peak_memory_mib']:,} MiB" if figures.get("peak_memory_mib") else "n/a"
        rows.append(f"| {name} | {rate} | {mfu} | {memory} | {notes} |")
    head = f"{results['gpu']}, torch {results['torch']}, {results['model']}, micro-batch {results['micro_batch']}"
    return f"{head}, {results['steps']} steps\n\n" + "\n".join(rows) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--sections", default=DEFAULT_SECTIONS, help="comma-separated, from: " + ", ".join(SECTIONS))
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds one process may take")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds all the processes may take")
    parser.add_argument("--out", type=Path, help="where to write gpu.json, summary.md and runs.log")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script: a tiny model, no GPU")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available() and not args.tiny:
        raise SystemExit("no GPU: this benchmark needs one (--tiny runs a CPU smoke test)")
    if args.tiny:
        vocab, gpus = 512, 0
        model = {"layers": 2, "hiddenSize": 64, "heads": 4, "maxSeqLen": 64, "intermediateSize": 256}
        args.steps, args.micro_batch, args.checkpoint_every = min(args.steps, 20), min(args.micro_batch, 4), 5
        args.timeout, args.budget = max(args.timeout, 600.0), max(args.budget, 3600.0)
    else:
        vocab, gpus = 32768, 1
        model = {"layers": 12, "hiddenSize": 768, "heads": 12, "maxSeqLen": 1024, "intermediateSize": 2048}
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (--tiny)",
        "torch": torch.__version__,
        "model": {**model, "vocabSize": vocab},
        "micro_batch": args.micro_batch,
        "steps": args.steps,
        "sections": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_shard = write_dataset(work / "data", vocab, 8_000_000 if not args.tiny else 200_000)
        bench = Bench(work, out, work / "data", args.timeout, args.budget)
        setup = {"model": model, "gpus": gpus, "vocab": vocab, "train_shard": train_shard}
        for section in filter(None, args.sections.split(",")):
            started = time.perf_counter()
            try:
                figures = measure(bench, section, args, setup, results["sections"])
            except Exception as error:  # report it and measure the rest
                figures = {"error": repr(error)}
            results["sections"][section] = {**figures, "section_s": round(time.perf_counter() - started)}
            shown = {k: v for k, v in figures.items() if k != "losses"}
            print(f"{section} ({time.perf_counter() - started:.0f} s): {json.dumps(shown)}", flush=True)
            (out / "gpu.json").write_text(json.dumps(results, indent=2))
    table = summary(results)
    (out / "summary.md").write_text(table)
    print("\n" + table, flush=True)


if __name__ == "__main__":
    main()

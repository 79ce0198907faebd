"""Trainer benchmarks on this machine's CPUs.

1. Throughput: llmtrain's Llama (eager; compiled per block as under FSDP2; compiled whole as one
   process runs it) against transformers' LlamaForCausalLM of the same shape, all with the same fused
   AdamW, in one process, interleaved in rounds; model FLOP/s as a fraction of the measured fp32 GEMM peak.
2. Scaling: `llmtrain train` with 2 FSDP2 ranks (gloo, 1 core each) against 1 process (2 cores).
3. Checkpoints: save and load of model + AdamW state through llmtrain's Checkpointer against a raw
   sequential write (and read) of the same number of bytes to the same disk, fsync'd.
4. Pauses: tokens/s of the steps right after a checkpoint + validation against the others, in a tiny
   `llmtrain train` run that logs every step (tokens/s leaves the pauses out: the ratio is about 1).
   Also, from (2): the minutes the whole example run (examples/run.yaml) takes in one process here.

    python bench/train.py [--rounds 3] [--steps 8] [--only checkpoint]
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

import torch

from llmtrain.model.flops import flops_per_token, measured_cpu_peak
from llmtrain.model.hf import hf_model
from llmtrain.model.llama import Llama, LlamaConfig, count_parameters

CONFIG = LlamaConfig(
    vocab_size=4096, layers=4, hidden_size=256, heads=8, kv_heads=8, intermediate_size=688, max_seq_len=256
)
BATCH = 8


def step_time(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor, hf: bool) -> float:
    started = time.perf_counter()
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    if hf:
        logits = model(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    else:
        loss = model.loss(inputs, targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def throughput(rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    tokens = torch.randint(0, CONFIG.vocab_size, (BATCH, CONFIG.max_seq_len + 1))
    contenders = {}
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "llmtrain-inductor"))
    for name in ("llmtrain", "llmtrain_compile_blocks", "llmtrain_compile", "transformers"):
        model = hf_model(CONFIG) if name == "transformers" else Llama(CONFIG)
        if name != "transformers":
            model.init_weights(torch.Generator().manual_seed(0))
        if name == "llmtrain_compile_blocks":
            for block in model.model.layers:
                block.compile()
        if name == "llmtrain_compile":
            model.loss = torch.compile(model.loss)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        for _ in range(2):  # warm up (compiles on the first step)
            step_time(model, optimizer, tokens, name == "transformers")
        contenders[name] = (model, optimizer, [])
    for _ in range(rounds):  # interleaved: every contender sees the same machine state
        for name, (model, optimizer, times) in contenders.items():
            times += [step_time(model, optimizer, tokens, name == "transformers") for _ in range(steps)]
    tokens_per_step = BATCH * CONFIG.max_seq_len
    flops = flops_per_token(CONFIG, count_parameters(Llama(CONFIG), exclude_embedding=True))
    peak = measured_cpu_peak()
    results = {"config": {**vars(CONFIG), "batch": BATCH}, "gemm_peak_gflops": round(peak / 1e9, 1)}
    for name, (_, _, times) in contenders.items():
        rate = tokens_per_step / statistics.median(times)
        results[name] = {
            "tokens_per_s": round(rate),
            "model_gflops": round(rate * flops / 1e9, 1),
            "fraction_of_gemm_peak": round(rate * flops / peak, 3),
        }
    base = results["transformers"]["tokens_per_s"]
    for name in ("llmtrain", "llmtrain_compile_blocks", "llmtrain_compile"):
        results[name]["vs_transformers"] = round(results[name]["tokens_per_s"] / base, 3)
    return results


def scaling(steps: int) -> dict:
    """tokens/s of the example TrainingRun for `steps` steps: 1 process vs 2 FSDP2 ranks."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        data = work_dir / "data"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "llmtrain.cli",
                "ingest",
                "-f",
                str(root / "examples/run.yaml"),
                "--output",
                str(data),
            ],
            check=True,
            capture_output=True,
        )
        out = {}
        for ranks in (1, 2):
            metrics = work_dir / f"m{ranks}"
            base = [
                "-m",
                "llmtrain.cli",
                "train",
                "-f",
                str(root / "examples/run.yaml"),
                "--data",
                str(data),
                "--checkpoints",
                str(work_dir / f"c{ranks}"),
                "--metrics-dir",
                str(metrics),
                "--max-steps",
                str(steps),
            ]
            command = (
                [sys.executable, *base]
                if ranks == 1
                else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *base]
            )
            subprocess.run(command, check=True, capture_output=True)
            records = [json.loads(line) for line in (metrics / "metrics.jsonl").read_text().splitlines()]
            rates = [r["tokensPerSecond"] for r in records if "tokensPerSecond" in r][1:]  # skip the first window
            out[f"ranks_{ranks}"] = {"tokens_per_s": round(statistics.median(rates))}
        out["efficiency_2_ranks"] = round(out["ranks_2"]["tokens_per_s"] / out["ranks_1"]["tokens_per_s"], 3)
        out["example_run_minutes"] = round(example_tokens(root) / out["ranks_1"]["tokens_per_s"] / 60, 1)
        out["note"] = "2 ranks x 1 core vs 1 process x 2 cores on the same 2 cores; per-rank batch as in the spec"
        return out


def example_tokens(root: Path) -> int:
    """The tokens the whole example TrainingRun trains on."""
    from llmtrain.api import TrainingRun, load_resources, select_resource

    spec = select_resource(load_resources(root / "examples/run.yaml"), TrainingRun).spec
    training = spec.training
    return (
        training.max_steps * training.micro_batch_size * training.gradient_accumulation_steps * spec.model.max_seq_len
    )


def pauses(steps: int = 40, every: int = 8) -> dict:
    """Median tokens/s of the steps after a checkpoint + validation (every `every`) against the others."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        (work_dir / "data").mkdir()
        for path in sorted((root / "examples/data/shakespeare").glob("*.txt"))[:6]:
            (work_dir / "data" / path.name).write_bytes(path.read_bytes())
        source = {
            "apiVersion": "llmtrain.dev/v1alpha1",
            "kind": "DataSource",
            "metadata": {"name": "corpus"},
            "spec": {"sources": [{"local": {"path": "data/*.txt"}}], "tokenizer": {"vocabSize": 512}},
        }
        run = {
            "apiVersion": "llmtrain.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": "pauses"},
            "spec": {
                "dataSourceRef": {"name": "corpus"},
                "model": {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "maxSeqLen": 64},
                "training": {"maxSteps": steps, "microBatchSize": 4, "precision": "fp32", "logEverySteps": 1},
                "validation": {"everySteps": every, "batches": 2},
                "checkpointing": {"everySteps": every, "keepLast": 2},
            },
        }
        (work_dir / "run.yaml").write_text(json.dumps(source) + "\n---\n" + json.dumps(run))
        cli = [sys.executable, "-m", "llmtrain.cli"]
        spec = str(work_dir / "run.yaml")
        data, saved, metrics = (str(work_dir / name) for name in ("d", "c", "m"))
        subprocess.run([*cli, "ingest", "-f", spec, "--output", data], check=True, capture_output=True, timeout=600)
        subprocess.run(
            [*cli, "train", "-f", spec, "--data", data, "--checkpoints", saved, "--metrics-dir", metrics],
            check=True,
            capture_output=True,
            timeout=600,
        )
        records = [json.loads(line) for line in (work_dir / "m" / "metrics.jsonl").read_text().splitlines()]
    after = statistics.median(r["tokensPerSecond"] for r in records if r["step"] % every == 1 and r["step"] > 1)
    others = statistics.median(r["tokensPerSecond"] for r in records if r["step"] % every not in (0, 1))
    return {
        "after_pause_tokens_per_s": round(after),
        "other_tokens_per_s": round(others),
        "after_pause_vs_others": round(after / others, 3),  # 0.26 before pauses were left out
    }


def checkpoints() -> dict:
    from llmtrain.train.checkpoint import Checkpointer
    from llmtrain.train.distributed import World

    config = LlamaConfig(
        vocab_size=32000, layers=12, hidden_size=768, heads=12, kv_heads=12, intermediate_size=2048, max_seq_len=1024
    )
    model = Llama(config)
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.loss(torch.randint(0, 32000, (1, 32)), torch.randint(0, 32000, (1, 32))).backward()
    optimizer.step()
    state_bytes = sum(p.numel() * 4 for p in model.parameters()) * 3 + 8 * len(optimizer.state)
    world = World(0, 0, 1, torch.device("cpu"))
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent / ".cache") as work:
        work_dir = Path(work)
        saver = Checkpointer(str(work_dir / "ckpt"), world, keep_last=5, keep_best=0, staging=work_dir / "s")
        started = time.perf_counter()
        saver.save(1, model, optimizer, {"model": dict(vars(config))})
        os.sync()
        save_s = time.perf_counter() - started
        started = time.perf_counter()
        saver.load("step-00000001", model, optimizer, dict(vars(config)))
        load_s = time.perf_counter() - started
        unverified_save_s, unverified_load_s, hashed = _without_verification(saver, model, optimizer, config)
        raw = work_dir / "raw.bin"
        buffer = os.urandom(1 << 24)
        started = time.perf_counter()
        with raw.open("wb") as handle:
            for _ in range(state_bytes // len(buffer) + 1):
                handle.write(buffer)
            handle.flush()
            os.fsync(handle.fileno())
        raw_write_s = time.perf_counter() - started
        written = raw.stat().st_size
        started = time.perf_counter()
        with raw.open("rb") as handle:
            while handle.read(1 << 24):
                pass
        raw_read_s = time.perf_counter() - started
    gb = state_bytes / 1e9
    return {
        "parameters_m": round(count_parameters(model) / 1e6, 1),
        "state_gb": round(gb, 3),
        "save_s": round(save_s, 2),
        "save_gb_per_s": round(gb / save_s, 3),
        "raw_write_gb_per_s": round(written / 1e9 / raw_write_s, 3),
        "save_vs_raw": round((gb / save_s) / (written / 1e9 / raw_write_s), 3),
        "load_s": round(load_s, 2),
        "load_gb_per_s": round(gb / load_s, 3),
        "raw_read_gb_per_s": round(written / 1e9 / raw_read_s, 3),
        "load_vs_raw": round((gb / load_s) / (written / 1e9 / raw_read_s), 3),
        "training_stall_per_checkpoint_s": round(save_s, 2),
        # the same save and load without the SHA-256 digests (save) and the verifying, pickle-free reader (load)
        "unverified_save_s": round(unverified_save_s, 2),
        "unverified_load_s": round(unverified_load_s, 2),
        "verified_save_vs_unverified": round(save_s / unverified_save_s, 3),
        "verified_load_vs_unverified": round(load_s / unverified_load_s, 3),
        "sha256_gb_per_s_one_core": round(hashed, 3),
    }


def _without_verification(saver, model, optimizer, config) -> tuple[float, float, float]:
    """Baseline in the same run: a save that records no digests, and DCP's stock load (which unpickles; our
    own files only), of the same state; and SHA-256 over the saved files on one core (GB/s)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from llmtrain.train import safe_load

    original = type(saver)._digests
    type(saver)._digests = lambda self, directory: {}
    try:
        started = time.perf_counter()
        saver.save(2, model, optimizer, {"model": dict(vars(config))})
        os.sync()
        save_s = time.perf_counter() - started
    finally:
        type(saver)._digests = original
    directory = saver.local / "step-00000002"
    model_state, optim_state = get_state_dict(model, optimizer)
    started = time.perf_counter()
    dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))
    load_s = time.perf_counter() - started
    files = [p for p in directory.iterdir() if p.is_file()]
    started = time.perf_counter()
    for path in files:
        safe_load.digest(path)
    hashed = sum(p.stat().st_size for p in files) / 1e9 / (time.perf_counter() - started)
    return save_s, load_s, hashed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--scaling-steps", type=int, default=40)
    parser.add_argument("--only", choices=["throughput", "checkpoint", "scaling", "pauses"], help="one section")
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    sections = {
        "throughput": lambda: throughput(args.rounds, args.steps),
        "checkpoint": checkpoints,
        "scaling": lambda: scaling(args.scaling_steps),
        "pauses": pauses,
    }
    for name, measure in sections.items():
        if args.only in (None, name):
            results[name] = measure()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

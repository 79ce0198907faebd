"""Training stall per checkpoint: synchronous against background (asyncSave) saves of the same state.

A 134.1M-parameter model (12 x 768, vocabulary 32,000) with its AdamW state (1.6 GB), saved by llmtrain's
Checkpointer (DCP, one process, local disk) in the same run, in rounds: a synchronous save (the trainer
waits for the whole write), then a background save, whose stall is `begin` (the state staged into CPU
buffers reused across saves, the RNG states captured, the worker thread started) plus `finish` (the
digests, meta.json, the pointers, retention, once the write is done). Between the two calls the trainer
would train; here the benchmark takes optimizer steps, as training would (they change the state that the
thread writes from its staged copy, and compete with it for the cores). The first background save also
allocates the staging buffers: it is reported apart from the later ones. The floor of the background
stall, measured in the same run: a plain copy of every tensor of the state into buffers allocated before
(memory bandwidth; it says how loaded the machine was).

    python bench/checkpoint_stall.py [--rounds 3] > bench/results/checkpoint_stall.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmtrain.model.llama import Llama, LlamaConfig, count_parameters
from llmtrain.train.checkpoint import Checkpointer
from llmtrain.train.distributed import World

CONFIG = LlamaConfig(
    vocab_size=32000, layers=12, hidden_size=768, heads=12, kv_heads=12, intermediate_size=2048, max_seq_len=1024
)
WORLD = World(0, 0, 1, torch.device("cpu"))


def train_step(model: Llama, optimizer: torch.optim.Optimizer) -> None:
    tokens = torch.randint(0, CONFIG.vocab_size, (1, 32))
    optimizer.zero_grad()
    model.loss(tokens, tokens.roll(1, dims=1)).backward()
    optimizer.step()


def synchronous(saver: Checkpointer, step: int, model: Llama, optimizer: torch.optim.Optimizer) -> float:
    started = time.perf_counter()
    saver.save(step, model, optimizer, {"model": dict(vars(CONFIG))})
    return time.perf_counter() - started


def background(saver: Checkpointer, step: int, model: Llama, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The stall of `begin` and of `finish`, the write's duration, and the training steps taken meanwhile."""
    started = time.perf_counter()
    pending = saver.begin(step, model, optimizer, {"model": dict(vars(CONFIG))})
    begun = time.perf_counter()
    steps = 0
    while not pending.written():
        train_step(model, optimizer)  # training goes on; the thread writes the staged copy
        steps += 1
    written = time.perf_counter()
    saver.finish(pending)
    finished = time.perf_counter()
    return {
        "begin_s": begun - started,
        "finish_s": finished - written,
        "stall_s": (begun - started) + (finished - written),
        "write_s": written - begun,
        "steps_meanwhile": steps,
    }


def memcpy_s(model: Llama, optimizer: torch.optim.Optimizer) -> float:
    """Seconds to copy every weight and AdamW moment into buffers allocated (and touched) before."""
    tensors = [p.detach() for p in model.parameters()]
    tensors += [value for state in optimizer.state.values() for value in state.values() if value.dim()]
    buffers = [torch.empty_like(t) for t in tensors]
    for buffer, tensor in zip(buffers, tensors, strict=True):
        buffer.copy_(tensor)
    started = time.perf_counter()
    for buffer, tensor in zip(buffers, tensors, strict=True):
        buffer.copy_(tensor)
    return time.perf_counter() - started


def measure(rounds: int) -> dict:
    model = Llama(CONFIG)
    model.init_weights(torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_step(model, optimizer)
    state_bytes = sum(p.numel() * 4 for p in model.parameters()) * 3
    cache = Path(__file__).resolve().parent / ".cache"
    cache.mkdir(exist_ok=True)
    sync_s, async_runs = [], []
    with tempfile.TemporaryDirectory(dir=cache) as work:
        work_dir = Path(work)
        blocking = Checkpointer(str(work_dir / "sync"), WORLD, keep_last=1, keep_best=0, staging=work_dir / "s1")
        staged = Checkpointer(
            str(work_dir / "async"), WORLD, keep_last=1, keep_best=0, staging=work_dir / "s2", background=True
        )
        for step in range(1, rounds + 1):
            sync_s.append(synchronous(blocking, step, model, optimizer))
            async_runs.append(background(staged, step, model, optimizer))
            print(json.dumps({"round": step, "sync_s": sync_s[-1], **async_runs[-1]}), file=sys.stderr, flush=True)
        staged.close()
    later = async_runs[1:] or async_runs
    copy_s = memcpy_s(model, optimizer)
    return {
        "parameters_m": round(count_parameters(model) / 1e6, 1),
        "state_gb": round(state_bytes / 1e9, 3),
        "rounds": rounds,
        "sync_stall_s": [round(s, 2) for s in sync_s],
        "async_stall_s": [round(r["stall_s"], 2) for r in async_runs],
        "async_stall_first_s": round(async_runs[0]["stall_s"], 2),
        "async_stall_median_after_first_s": round(statistics.median(r["stall_s"] for r in later), 2),
        "async_stall_max_s": round(max(r["stall_s"] for r in async_runs), 2),
        "async_begin_s": [round(r["begin_s"], 2) for r in async_runs],
        "async_finish_s": [round(r["finish_s"], 2) for r in async_runs],
        "async_background_write_s": [round(r["write_s"], 2) for r in async_runs],
        "training_steps_during_write": [r["steps_meanwhile"] for r in async_runs],
        "memcpy_of_the_state_s": round(copy_s, 2),
        "async_stall_over_memcpy": round(statistics.median(r["stall_s"] for r in later) / copy_s, 2),
        "sync_over_async_stall": round(statistics.median(sync_s) / statistics.median(r["stall_s"] for r in later), 1),
        "target_stall_s": 1.0,
        "met": max(r["stall_s"] for r in async_runs) <= 1.0,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds), indent=2))


if __name__ == "__main__":
    main()

"""Starting from Hugging Face weights: peak memory and time per rank, llmtrain's sharded load vs the
full model on every rank, and transformers' own `from_pretrained` as the peer.

A random transformers LlamaForCausalLM (default ~170 M parameters, fp32 safetensors, sharded files) is
saved once. Then, per world size (CPU ranks under torchrun, gloo):
- llmtrain: `build_model(empty=True)` (meta device, FSDP2, each rank allocates its shards) and
  `initial.load` (each rank reads its rows from the safetensors files);
- full-then-shard (the baseline a naive loader is): every rank builds the full model, loads the whole
  state dict with safetensors' `load_file`, then shards it;
- transformers (one process): `LlamaForCausalLM.from_pretrained(dtype=float32)`.
Each rank reports its peak RSS (ru_maxrss) above the RSS it had before loading, and the seconds taken,
both after reading every parameter once (transformers may leave tensors as pages of the mapped files).

    python bench/init_load.py [--layers 8 --hidden 1024 --vocab 32000] > bench/results/init_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = (("transformers", 1), ("full-then-shard", 1), ("llmtrain", 1), ("full-then-shard", 2), ("llmtrain", 2))


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_model(directory: Path, layers: int, hidden: int, vocab: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=int(hidden * 8 / 3) // 256 * 256 + 256,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 256,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="200MB")
    return sum(p.numel() for p in model.parameters())


def worker(model_dir: str, mode: str, out_dir: str) -> None:
    """One rank: load the weights one way; write {rank, peakMiB above the start, seconds} to out_dir."""
    from llmtrain.api import TrainingRun
    from llmtrain.train import distributed, initial
    from llmtrain.train.build import build_model
    from llmtrain.train.precision import Precision

    world = distributed.setup()
    run = TrainingRun.model_validate(
        {
            "apiVersion": "llmtrain.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": "bench"},
            "spec": {"dataSourceRef": {"name": "x"}, "init": {"from": model_dir}, "training": {"maxSteps": 1}},
        }
    )
    origin = initial.locate(model_dir, "latest", None, Path(tempfile.gettempdir()), world)
    precision = Precision("fp32", "cpu", world.distributed)
    distributed.barrier(world)
    start_rss, started = rss_mib(), time.perf_counter()
    if mode == "llmtrain":
        model = build_model(origin.config, run, world, precision, empty=True)
        initial.load(origin, model, None, world)
    else:
        from safetensors.torch import load_file

        from llmtrain.model.llama import Llama

        model = Llama(origin.config)
        state = {}
        for path in sorted(Path(model_dir).glob("*.safetensors")):
            state.update(load_file(path))
        model.load_state_dict(state, strict=False)
        del state
        model = distributed.shard(model, world, precision)
    touch(model)
    distributed.barrier(world)
    seconds = time.perf_counter() - started
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
    result = {"rank": world.rank, "peakMiB": peak_mib() - start_rss, "seconds": seconds, "localParameters": local}
    Path(out_dir, f"rank-{world.rank}.json").write_text(json.dumps(result))
    distributed.barrier(world)
    distributed.teardown()


def transformers_load(model_dir: str, out_dir: str) -> None:
    import torch
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start_rss, started = rss_mib(), time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    touch(model)  # its tensors may still be pages of the mapped files: read every one, as training will
    result = {"rank": 0, "peakMiB": peak_mib() - start_rss, "seconds": time.perf_counter() - started}
    Path(out_dir, "rank-0.json").write_text(json.dumps(result))


def touch(model) -> float:
    """Read every parameter this process holds (a lazily mapped tensor is paged in), as training would."""
    return sum(float((p.to_local() if hasattr(p, "to_local") else p).sum()) for p in model.parameters())


def measure(model_dir: Path, mode: str, ranks: int) -> list[dict]:
    """Each rank's result. A torchrun whose every rank wrote its result but exited non-zero is accepted:
    gloo sometimes aborts in process-group teardown after the work is done (1 in ~8 runs of this harness,
    with or without llmtrain's loader), which says nothing about loading."""
    with tempfile.TemporaryDirectory() as out:
        if mode == "transformers":
            command = [sys.executable, __file__, "--transformers", str(model_dir), out]
        else:
            prefix = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            prefix += [] if ranks == 1 else [f"--nproc_per_node={ranks}"]
            command = [*prefix, __file__, "--worker", str(model_dir), mode, out]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "trainer")}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
        results = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank-*.json"))]
    if len(results) != ranks:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--transformers", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    if args.transformers:
        return transformers_load(*args.transformers)
    with tempfile.TemporaryDirectory() as temp:
        model_dir = Path(temp) / "hf"
        parameters = save_model(model_dir, args.layers, args.hidden, args.vocab)
        results = {
            "parameters": parameters,
            "fp32MiB": parameters * 4 / 2**20,
            "runs": [
                {"mode": mode, "ranks": ranks, "perRank": measure(model_dir, mode, ranks)} for mode, ranks in RUNS
            ],
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

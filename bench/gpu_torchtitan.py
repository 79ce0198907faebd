"""torchtitan at the shape of llmtrain's GPU benchmark, for a same-card throughput comparison.

torchtitan's own `Trainer` (its training loop; `parallelize_llama`: FSDP2 with a bf16 MixedPrecisionPolicy,
per-block torch.compile and a compiled loss; fused AdamW; gradient clipping; from 0.3 on, CUDA-graph capture
of forward+backward, its default) builds and trains its llama3 model with a flavor of our shape: the layers,
width, heads, SwiGLU width, vocabulary and sequence length of llmtrain's run, untied embeddings, RoPE theta
10,000, causal SDPA attention (the kernel llmtrain calls; `--attention flex` for torchtitan's flex attention,
GPU only). Only the two ends are ours: a dataloader reading the same token file as llmtrain's run (torchtitan's
loaders need a Hugging Face dataset and tokenizer, which an offline machine has not) and no tokenizer (0.3:
a stand-in it never calls). Its command line (`torchtitan.train`) selects only registered flavors and
datasets, so this drives it from Python:

- torchtitan >= 0.3 (its torch must have `DataParallelMeshDims`, which 2.11 has not): `Trainer.Config` with a
  model spec built as its `model_registry` builds one;
- torchtitan 0.2 (torch 2.11): llama3's train spec registered under another name with our flavor and loader,
  the job parsed by its `ConfigManager` from command-line flags (recorded in the result), then what
  `torchtitan.train.main` does.

tokens/s is measured the way llmtrain's metrics measure it (tokens over wall time between logged steps,
after the first two intervals, medians), and MFU with llmtrain's FLOPs formula (`llmtrain.model.flops`), so
the two engines' numbers are comparable; torchtitan's own MFU (its formula) is reported beside it.

    python bench/gpu_torchtitan.py --tokens FILE --vocab N --out result.json [--steps 60 --batch 32 ...]
    python bench/gpu_torchtitan.py --tokens FILE --vocab N --out r.json --tiny     (a CPU smoke test)

bench/gpu.sh installs torchtitan and its dependencies from carried wheels; bench/gpu.py runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))

TINY = {"layers": 2, "hidden": 64, "heads": 4, "intermediate": 256, "seq_len": 64, "batch": 4}
SHAPE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 2048, "seq_len": 1024, "batch": 32}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=Path, required=True, help="uint16 token file (the benchmark's train shard)")
    parser.add_argument("--vocab", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--batch", type=int, help="micro-batch (sequences per step)")
    parser.add_argument("--attention", choices=("sdpa", "flex"), default="sdpa", help="sdpa: llmtrain's kernel")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test (torchtitan's device patched to CPU)")
    return parser.parse_args()


def single_process_environment() -> None:
    """torchrun's variables for one process, so torchtitan can start its process group itself."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(name, value)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, then the figures: tokens/s and MFU as llmtrain measures them, and torchtitan's own MFU."""
    from llmtrain.model.flops import device_peak, flops_per_token
    from llmtrain.model.shape import LlamaConfig, parameter_count

    if args.tiny:
        run_on_cpu()
    shape = {**(TINY if args.tiny else SHAPE), **({"batch": args.batch} if args.batch else {})}
    settings = {"compile": not args.no_compile and not args.tiny, "dump": tempfile.mkdtemp(prefix="torchtitan-")}
    api = train_03 if version("torchtitan") >= (0, 3) else train_02
    from torchtitan.tools.logging import init_logger

    init_logger()
    single_process_environment()
    started = time.perf_counter()
    trainer, logged, settings = api(args, shape, settings)
    wall = time.perf_counter() - started

    equivalent = LlamaConfig(
        vocab_size=args.vocab,
        layers=shape["layers"],
        hidden_size=shape["hidden"],
        heads=shape["heads"],
        kv_heads=shape["heads"],
        intermediate_size=shape["intermediate"],
        max_seq_len=shape["seq_len"],
    )
    model = trainer.model_parts[0]
    titan_parameters = sum(p.numel() for name, p in model.named_parameters() if "tok_embeddings" not in name)
    per_token = flops_per_token(equivalent, parameter_count(equivalent, exclude_embedding=True))
    tokens_per_step = shape["batch"] * shape["seq_len"]
    # the first two intervals hold compilation and warm-up: llmtrain's medians skip them too
    rates = [tokens_per_step * (b["step"] - a["step"]) / (b["time"] - a["time"]) for a, b in pairwise(logged)][2:]
    peak = device_peak(torch.cuda.get_device_name(), True) if torch.cuda.is_available() else None
    tokens_per_second = statistics.median(rates) if rates else None
    titan_mfus = [r["titan_mfu"] for r in logged[2:]]
    return {
        "engine": "torchtitan " + ".".join(map(str, version("torchtitan"))),
        "torch": torch.__version__,
        "attention": args.attention,
        **{k: v for k, v in settings.items() if k != "dump"},
        "shape": {**shape, "vocab": args.vocab},
        "parameters_without_embedding": titan_parameters,
        "llmtrain_parameters_without_embedding": parameter_count(equivalent, exclude_embedding=True),
        "tokens_per_s": round(tokens_per_second) if tokens_per_second else None,
        "mfu": round(tokens_per_second * per_token / peak, 4) if tokens_per_second and peak else None,
        "titan_mfu_percent": round(statistics.median(titan_mfus), 2) if titan_mfus and None not in titan_mfus else None,
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
        "first_loss": round(logged[0]["loss"], 4) if logged else None,
        "final_loss": round(logged[-1]["loss"], 4) if logged else None,
        "wall_s": round(wall, 1),
        "logged": logged,
    }


def token_windows(path: str, seq_len: int, batch: int, seed: int, with_positions: bool):
    """Batches of windows of seq_len + 1 tokens at random offsets of a uint16 token file: the inputs (with
    positions 0..seq_len-1 when asked: flex attention builds its causal mask from them) and the labels."""
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - seq_len - 1, batch)
        windows = torch.from_numpy(np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64))
        inputs = {"input": windows[:, :-1]}
        if with_positions:
            inputs["positions"] = torch.arange(seq_len).expand(batch, -1)
        yield inputs, windows[:, 1:]


def train_03(args: argparse.Namespace, shape: dict[str, int], settings: dict[str, Any]) -> tuple[Any, list, dict]:
    """torchtitan >= 0.3 (needs torch's `DataParallelMeshDims`, not in torch 2.11): its `Trainer.Config`
    with a model spec of our shape, our dataloader and tokenizer stand-in, its defaults otherwise."""
    from torchtitan.components.dataloader import BaseDataLoader
    from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
    from torchtitan.components.metrics import MetricsProcessor
    from torchtitan.components.optimizer import LRSchedulersContainer, default_adamw
    from torchtitan.components.tokenizer import BaseTokenizer
    from torchtitan.config import CompileConfig, TrainingConfig
    from torchtitan.trainer import Trainer

    class UnusedTokenizer(BaseTokenizer):
        """Stands in for the Hugging Face tokenizer the trainer builds: the data are token ids already."""

        @dataclass(kw_only=True, slots=True)
        class Config(BaseTokenizer.Config):
            vocab_size: int = 0

        def __init__(self, config: Config, **_: Any) -> None:
            super().__init__()
            self.vocab_size = config.vocab_size

        def encode(self, *args: Any, **kwargs: Any) -> list[int]:
            raise NotImplementedError("the benchmark feeds token ids")

        def decode(self, *args: Any, **kwargs: Any) -> str:
            raise NotImplementedError("the benchmark feeds token ids")

        def get_vocab_size(self) -> int:
            return self.vocab_size

    class TokenFileLoader(BaseDataLoader):
        @dataclass(kw_only=True, slots=True)
        class Config(BaseDataLoader.Config):
            with_positions: bool = False

        def __init__(self, config: Config, *, seq_len: int, local_batch_size: int, dp_rank: int, **_: Any) -> None:
            assert config.dataset_path is not None
            self.batches = token_windows(config.dataset_path, seq_len, local_batch_size, dp_rank, config.with_positions)

        def __iter__(self):
            return self.batches

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            pass

    cuda_graphs = not (args.no_cuda_graphs or args.tiny)
    config = Trainer.Config(
        model_spec=titan_model_spec(args.vocab, shape, args.attention),
        hf_assets_path=str(args.tokens.parent),
        dump_folder=settings["dump"],
        tokenizer=UnusedTokenizer.Config(vocab_size=args.vocab),
        dataloader=TokenFileLoader.Config(dataset_path=str(args.tokens), with_positions=args.attention == "flex"),
        loss=ChunkedLossWrapper.Config(loss_fn=CrossEntropyLoss.Config(global_vocab_size=args.vocab)),
        optimizer=default_adamw(lr=3e-4),
        lr_scheduler=LRSchedulersContainer.Config(warmup_steps=5),
        training=TrainingConfig(
            local_batch_size=shape["batch"],
            seq_len=shape["seq_len"],
            steps=args.steps,
            mixed_precision_param="bfloat16",
            disable_cuda_graphs=not cuda_graphs,
        ),
        metrics=MetricsProcessor.Config(log_freq=args.log_every),
        compile=CompileConfig(enable=settings["compile"], components=["model", "loss"]),
        activation_checkpoint=None,
    )
    if args.tiny:
        config.optimizer.implementation = "foreach"
    trainer = config.build()
    logged = record_logged_steps(trainer)
    try:
        trainer.train()
    finally:
        trainer.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return trainer, logged, {**settings, "cuda_graphs": cuda_graphs, "loss": "chunked cross-entropy"}


def train_02(args: argparse.Namespace, shape: dict[str, int], settings: dict[str, Any]) -> tuple[Any, list, dict]:
    """torchtitan 0.2 (runs on torch 2.11): llama3's train spec registered under our name with a flavor of
    our shape and our dataloader (no tokenizer), the job configured through its command-line parser, then
    what `torchtitan.train.main` does: build the `Trainer`, train, close."""
    import dataclasses

    from torchtitan.components.dataloader import BaseDataLoader
    from torchtitan.config import ConfigManager
    from torchtitan.models.llama3 import TransformerModelArgs, get_train_spec
    from torchtitan.protocols.train_spec import register_train_spec
    from torchtitan.train import Trainer

    class TokenFileLoader(BaseDataLoader):
        def __init__(self, batches: Any) -> None:
            self.batches = batches

        def __iter__(self):
            return self.batches

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            pass

    def build_loader(dp_world_size: int, dp_rank: int, tokenizer: Any, job_config: Any) -> TokenFileLoader:
        training = job_config.training
        flex = args.attention == "flex"
        return TokenFileLoader(
            token_windows(str(args.tokens), training.seq_len, training.local_batch_size, dp_rank, flex)
        )

    flavor = TransformerModelArgs(
        dim=shape["hidden"],
        n_layers=shape["layers"],
        n_heads=shape["heads"],
        vocab_size=args.vocab,
        multiple_of=256,  # SwiGLU 2/3 x 4 x dim rounded up to 256: llmtrain's width (checked by the counts)
        rope_theta=10000.0,
        max_seq_len=shape["seq_len"],
        attn_type="flex" if args.attention == "flex" else "sdpa",
    )
    spec = dataclasses.replace(
        get_train_spec(), model_args={"bench": flavor}, build_dataloader_fn=build_loader, build_tokenizer_fn=None
    )
    register_train_spec("llmtrain_bench", spec)
    command_line = ["--job.dump_folder", settings["dump"], "--model.name", "llmtrain_bench", "--model.flavor", "bench"]
    command_line += ["--model.hf_assets_path", str(args.tokens.parent)]
    command_line += ["--training.local_batch_size", str(shape["batch"]), "--training.seq_len", str(shape["seq_len"])]
    command_line += ["--training.steps", str(args.steps), "--training.mixed_precision_param", "bfloat16"]
    command_line += ["--optimizer.lr", "3e-4", "--lr_scheduler.warmup_steps", "5"]
    command_line += ["--metrics.log_freq", str(args.log_every), "--activation_checkpoint.mode", "none"]
    command_line += ["--compile.enable"] if settings["compile"] else []
    command_line += ["--optimizer.implementation", "foreach"] if args.tiny else []
    trainer = Trainer(ConfigManager().parse_args(command_line))
    logged = record_logged_steps(trainer)
    try:
        trainer.train()
    finally:
        trainer.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return trainer, logged, {**settings, "cuda_graphs": False, "loss": "cross-entropy", "command_line": command_line}


def run_on_cpu() -> None:
    """For the smoke test: torchtitan picks CUDA when it finds no accelerator, and its memory monitor asks the
    device module for CUDA's statistics, and its barrier for CUDA device ids. Make it pick the CPU, report no
    memory and skip the timeout barrier (one process: there is nobody to wait for)."""
    import torch._utils

    torch._utils._get_available_device_type = lambda: "cpu"
    from torchtitan.components import metrics
    from torchtitan.distributed import utils as distributed_utils

    distributed_utils.set_pg_timeouts = lambda timeout, parallel_dims: None

    class NoMemoryMonitor:
        device_name, device_capacity_gib = "cpu", 0.0

        def get_peak_stats(self) -> Any:
            return metrics.DeviceMemStats(0.0, 0.0, 0.0, 0.0, 0, 0)

        def reset_peak_stats(self) -> None:
            pass

    metrics.build_device_memory_monitor = NoMemoryMonitor


def titan_model_spec(vocab: int, shape: dict[str, int], attention: str):
    """torchtitan's llama3 model spec (as its `model_registry` builds one) for a flavor of our shape: untied
    embeddings, RoPE theta 10000 without scaling, llmtrain's SwiGLU width; torchtitan's initialization."""
    from torchtitan.distributed.pipeline_parallel import pipeline_llm
    from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm
    from torchtitan.models.common.attention import ScaledDotProductAttention
    from torchtitan.models.llama3 import (
        _EMBEDDING_INIT,
        _NORM_INIT,
        Llama3Model,
        Llama3StateDictAdapter,
        _build_llama3_layers,
        _output_linear_init,
        parallelize_llama,
    )
    from torchtitan.protocols.model_spec import ModelSpec

    dim, heads = shape["hidden"], shape["heads"]
    layers = _build_llama3_layers(
        n_layers=shape["layers"],
        dim=dim,
        n_heads=heads,
        hidden_dim=shape["intermediate"],
        rope=ComplexRoPE.Config(dim=dim // heads, max_seq_len=shape["seq_len"], theta=10000.0),
        attn_backend="flex",
    )
    if attention == "sdpa":  # causal SDPA (flash attention), the kernel llmtrain calls
        for layer in layers:
            layer.attention.inner_attention = ScaledDotProductAttention.Config()
    model = Llama3Model.Config(
        dim=dim,
        vocab_size=vocab,
        tok_embeddings=Embedding.Config(num_embeddings=vocab, embedding_dim=dim, param_init=_EMBEDDING_INIT),
        norm=RMSNorm.Config(normalized_shape=dim, param_init=_NORM_INIT),
        lm_head=Linear.Config(in_features=dim, out_features=vocab, param_init=_output_linear_init(dim)),
        layers=layers,
    )
    return ModelSpec(
        name="llama3",
        flavor="llmtrain-bench",
        model=model,
        parallelize_fn=parallelize_llama,
        pipelining_fn=pipeline_llm,
        post_optimizer_build_fn=None,
        state_dict_adapter=Llama3StateDictAdapter,
    )


def record_logged_steps(trainer: Any) -> list[dict[str, Any]]:
    """Wraps torchtitan's metrics logging (it syncs with the device on the loss first): each logged step's
    wall time, loss and torchtitan's own MFU."""
    logged: list[dict[str, Any]] = []
    processor = trainer.metrics_processor
    original = processor.log

    def log(step: int, global_avg_loss: float, *args: Any, **kwargs: Any) -> Any:
        now = time.perf_counter()
        flops, tokens = processor.num_flops_per_token, processor.ntokens_since_last_log
        elapsed = now - processor.time_last_log
        peak = getattr(processor, "gpu_peak_flops", None)
        titan_mfu = 100 * flops * tokens / elapsed / peak if peak and elapsed > 0 else None
        logged.append({"step": step, "time": now, "loss": float(global_avg_loss), "titan_mfu": titan_mfu})
        return original(step, global_avg_loss, *args, **kwargs)

    processor.log = log
    return logged


def version(distribution: str) -> tuple[int, ...]:
    """An installed distribution's version as numbers (major, minor, patch)."""
    from importlib.metadata import version as installed

    return tuple(int(part) for part in installed(distribution).split("+")[0].split(".")[:3] if part.isdigit())


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available() and not args.tiny:
        raise SystemExit("no GPU: torchtitan trains on accelerators (--tiny runs a CPU smoke test)")
    result = run(args)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "logged"}), flush=True)


if __name__ == "__main__":
    main()

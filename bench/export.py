"""Export benchmarks.

1. Time and size per format for a ~10M-parameter model (6 layers x 384, the example's vocabulary; random
   weights: time and size do not depend on training), each artifact's deployment check included.
2. Perplexity deltas of the quantized artifacts (GGUF Q8_0 and Q4_0 in llama.cpp, ONNX INT8 in
   onnxruntime) on the trained example model (examples/run.yaml, trained here when no checkpoint is given).

    python bench/export.py [--checkpoints DIR --data DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmtrain.data import tokenizer as tokenizers
from llmtrain.export import gguf, hf, onnx, torchscript
from llmtrain.export.artifacts import digest
from llmtrain.export.checkpoint import load, resolve
from llmtrain.model.llama import Llama, LlamaConfig, count_parameters
from llmtrain.train.loader import Dataset

ROOT = Path(__file__).resolve().parent.parent


def example(work: Path) -> tuple[Path, Path]:
    data, checkpoints = work / "data", work / "checkpoints"
    run = [sys.executable, "-m", "llmtrain.cli"]
    subprocess.run(
        [*run, "ingest", "-f", str(ROOT / "examples/run.yaml"), "--output", str(data)], check=True, capture_output=True
    )
    subprocess.run(
        [*run, "train", "-f", str(ROOT / "examples/run.yaml"), "--data", str(data), "--checkpoints", str(checkpoints)],
        check=True,
        capture_output=True,
    )
    return data, checkpoints


def per_format(data: Path, work: Path) -> dict:
    """Write and check every format for a ~10M model; the example's tokenizer is resized by vocabulary."""
    dataset = Dataset.open(data)
    vocab = dataset.vocab_size
    config = LlamaConfig(
        vocab_size=vocab, layers=6, hidden_size=384, heads=6, kv_heads=6, intermediate_size=1024, max_seq_len=256
    )
    model = Llama(config)
    model.init_weights(torch.Generator().manual_seed(0))
    model.eval()
    tokenizer_dir = data / "tokenizer"
    tok = tokenizers.load(tokenizer_dir)
    stream = dataset.stream("validation")
    prompts = [stream.window(0, 8).tolist(), stream.window(64, 24).tolist(), stream.window(128, 48).tolist()]
    corpus = [tok.decode(stream.window(i * 97, 40).tolist()) for i in range(8)]
    results = {"parameters_m": round(count_parameters(model) / 1e6, 2)}
    jobs = {
        "safetensors": lambda: (
            hf.write(model, tokenizer_dir, work / "hf"),
            lambda p: hf.validate(p, model, prompts, corpus, tok, 32, 1e-3),
        ),
        "torchscript": lambda: (
            torchscript.write(model, work / "m.pt"),
            lambda p: torchscript.validate(p, model, prompts, 32, 1e-3),
        ),
        "onnx": lambda: (onnx.write(model, work / "m.onnx"), lambda p: onnx.validate(p, model, prompts, 32, 1e-3)),
        "onnx-int8": lambda: (onnx.quantize_int8(work / "m.onnx", work / "m8.onnx"), None),
        "gguf-f32": lambda: (
            gguf.write(model, tokenizer_dir, work / "m32.gguf", "f32"),
            lambda p: gguf.validate(p, model, prompts, corpus, tok, 32, 1e-3),
        ),
        "gguf-f16": lambda: (gguf.write(model, tokenizer_dir, work / "m16.gguf", "f16"), None),
        "gguf-q8_0": lambda: (gguf.write(model, tokenizer_dir, work / "mq8.gguf", "q8_0"), None),
        "gguf-q4_0": lambda: (gguf.write(model, tokenizer_dir, work / "mq4.gguf", "q4_0"), None),
    }
    for name, job in jobs.items():
        started = time.perf_counter()
        path, check = job()
        written = time.perf_counter() - started
        entry = {"write_s": round(written, 2), "bytes": digest(path)[0]}
        if check is not None:
            started = time.perf_counter()
            verdict = check(path)
            entry.update(
                check_s=round(time.perf_counter() - started, 2),
                passed=verdict["passed"],
                max_relative_error=verdict["maxRelativeError"],
            )
        results[name] = entry
    return results


def quality(data: Path, checkpoints: Path, work: Path) -> dict:
    model = load(resolve(str(checkpoints), "latest"), work)
    dataset = Dataset.open(data)
    stream = dataset.stream("validation")
    length = model.config.max_seq_len + 1
    windows = [stream.window(i * length, length).tolist() for i in range(min(40, (len(stream) - 1) // length))]
    tokenizer_dir = data / "tokenizer"
    out = {
        "parameters_m": round(count_parameters(model) / 1e6, 2),
        "windows": len(windows),
        "tokens": sum(len(w) - 1 for w in windows),
    }
    reference = gguf.perplexity(gguf.write(model, tokenizer_dir, work / "q32.gguf", "f32"), windows, length)
    out["gguf_f32_perplexity"] = round(reference, 3)
    for kind in ("f16", "q8_0", "q4_0"):
        measured = gguf.perplexity(gguf.write(model, tokenizer_dir, work / f"q-{kind}.gguf", kind), windows, length)
        out[f"gguf_{kind}_perplexity_increase"] = round(measured / reference - 1, 5)
    full = onnx.write(model, work / "q.onnx")
    int8 = onnx.quantize_int8(full, work / "q8.onnx")
    verdict = onnx.validate_quantized(int8, full, windows, 1.0)
    out["onnx_int8_perplexity_increase"] = round(verdict["perplexityIncrease"], 5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=Path)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        data, checkpoints = (args.data, args.checkpoints) if args.checkpoints else example(work_dir)
        results = {
            "formats_10m": per_format(data, work_dir),
            "quantization_on_example": quality(data, checkpoints, work_dir),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""`llmtrain export`: resolve the checkpoint, write each format, prove each artifact, publish, report last.

Artifacts are written to a local staging directory and validated there; only then are they uploaded
(each file atomically), and the report (`export-report.json`) is written last, so a report never names
an incomplete artifact. A failed validation fails the export (the report says which check failed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import logs, storage
from ..api.modelexport import ModelExport
from ..api.trainingrun import ModelSpec
from ..data import tokenizer as tokenizers
from ..errors import BadInput
from ..model.llama import LlamaConfig
from ..train.loader import Dataset
from . import gguf, hf, onnx, torchscript
from .artifacts import Artifact
from .checkpoint import ExportError, check_spec, load, resolve
from .checks import check_tokenizer

REPORT = "export-report.json"
BUILT = ("safetensors", "torchscript", "onnx", "gguf")
#: The GGUF tensor type each quantization asks for.
GGUF_TYPES = {"int8": "q8_0", "q8_0": "q8_0", "int4": "q4_0", "q4_0": "q4_0"}


class ValidationFailed(BadInput):
    """An artifact failed its deployment check (permanent: the same checkpoint fails the same way)."""


def _prompts(dataset: Dataset, max_len: int) -> list[list[int]]:
    """Fixed prompts from the validation split, of three lengths."""
    stream = dataset.stream("validation")
    lengths = [min(n, max_len) for n in (8, 24, 48)]
    return [stream.window(i * 64, n).tolist() for i, n in enumerate(lengths)]


def _windows(dataset: Dataset, max_len: int, count: int = 16) -> list[list[int]]:
    """Validation windows for perplexity (the quantized artifacts' check)."""
    stream = dataset.stream("validation")
    length = min(max_len, 128) + 1
    available = max(1, (len(stream) - 1) // length)
    return [stream.window(i * length, length).tolist() for i in range(min(count, available))]


def _corpus(dataset: Dataset, tokenizer: Any, count: int = 16) -> list[str]:
    stream = dataset.stream("validation")
    return [tokenizer.decode(stream.window(i * 97, 40).tolist()) for i in range(count)]


def export(
    resource: ModelExport, checkpoint_uri: str, data: str, output: str, cache: Path, run_model: ModelSpec | None = None
) -> dict[str, Any]:
    """Export; `run_model` (the TrainingRun's spec.model, when known) must describe the checkpoint."""
    spec = resource.spec
    unsupported = [f for f in spec.formats if f not in BUILT]
    if unsupported:
        raise ExportError(f"spec.formats: {unsupported} cannot be exported")
    found = resolve(checkpoint_uri, spec.checkpoint, spec.step)
    logs.audit("ExportStarted", export=resource.name, checkpoint=found.uri, step=found.step)
    dataset = Dataset.open(storage.local_dataset(data, cache))  # an s3:// dataset is copied to the cache
    dataset.verify_shards()
    model = load(found, cache)
    if model.config.vocab_size != dataset.vocab_size:
        raise ExportError(
            f"the checkpoint's vocabulary ({model.config.vocab_size}) is not the dataset's"
            f" ({dataset.vocab_size}): --data must be the DataSource the run trained on"
        )
    check_spec(model, LlamaConfig.from_spec(run_model, dataset.vocab_size) if run_model else None)
    tokenizer_dir = dataset.root / dataset.manifest["tokenizer"]["path"]
    training_tokenizer = tokenizers.load(tokenizer_dir)
    check_tokenizer(training_tokenizer, model.config.vocab_size, str(tokenizer_dir))
    prompts = _prompts(dataset, model.config.max_seq_len)
    corpus = _corpus(dataset, training_tokenizer)
    limits = spec.validate_
    storage.delete(storage.join(output, REPORT))
    staging = Path(tempfile.mkdtemp(prefix="llmtrain-export-", dir=cache if cache.exists() else None))
    artifacts: list[Artifact] = []
    try:
        for fmt in spec.formats:
            started = time.monotonic()
            if fmt == "safetensors":
                path = hf.write(model, tokenizer_dir, staging / "hf")
                check = hf.validate(
                    path, model, prompts, corpus, training_tokenizer, limits.greedy_tokens, limits.max_relative_error
                )
                artifacts.append(Artifact("safetensors", "none", path, "hf", check))
            elif fmt == "onnx":
                path = onnx.write(model, staging / "model.onnx")
                check = onnx.validate(path, model, prompts, limits.greedy_tokens, limits.max_relative_error)
                artifacts.append(Artifact("onnx", "none", path, "model.onnx", check))
                if spec.quantization == "int8":
                    quantized = onnx.quantize_int8(path, staging / "model.int8.onnx")
                    windows = _windows(dataset, model.config.max_seq_len)
                    check = onnx.validate_quantized(quantized, path, windows, limits.max_perplexity_increase)
                    artifacts.append(Artifact("onnx", "int8", quantized, "model.int8.onnx", check))
            elif fmt == "gguf":
                gguf.check_quantizable(model, GGUF_TYPES.get(spec.quantization, "f32"))
                path = gguf.write(model, tokenizer_dir, staging / "model-f32.gguf", "f32")
                check = gguf.validate(
                    path, model, prompts, corpus, training_tokenizer, limits.greedy_tokens, limits.max_relative_error
                )
                artifacts.append(Artifact("gguf", "none", path, "model-f32.gguf", {**check, "tensorType": "F32"}))
                kind = GGUF_TYPES.get(spec.quantization)
                if kind:
                    quantized = gguf.write(model, tokenizer_dir, staging / f"model-{kind}.gguf", kind)
                    windows = _windows(dataset, model.config.max_seq_len)
                    context = model.config.max_seq_len
                    reference = gguf.perplexity(path, windows, context)
                    measured = gguf.perplexity(quantized, windows, context)
                    increase = measured / reference - 1
                    check = {
                        "runtime": check["runtime"],
                        "tensorType": kind.upper(),
                        "perplexity": measured,
                        "perplexityIncrease": increase,
                        "passed": increase <= limits.max_perplexity_increase,
                    }
                    if not check["passed"]:
                        check["message"] = (
                            f"validation perplexity {measured:.3f} is {increase:.1%} above F32"
                            f" ({reference:.3f}); limit {limits.max_perplexity_increase:.1%}"
                        )
                    artifacts.append(Artifact("gguf", kind, quantized, f"model-{kind}.gguf", check))
            elif fmt == "torchscript":
                path = torchscript.write(model, staging / "model.torchscript.pt")
                check = torchscript.validate(path, model, prompts, limits.greedy_tokens, limits.max_relative_error)
                artifacts.append(Artifact("torchscript", "none", path, "model.torchscript.pt", check))
            artifacts[-1].validation["seconds"] = round(time.monotonic() - started, 2)
        failed = [a for a in artifacts if not a.passed]
        published = [a.publish(output) for a in artifacts]
        report = {
            "export": resource.name,
            "checkpoint": {"uri": found.uri, "step": found.step},
            "artifacts": published,
            "passed": not failed,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        storage.write_bytes(storage.join(output, REPORT), json.dumps(report, indent=2).encode())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if failed:
        reasons = "; ".join(f"{a.format}: {a.validation.get('message')}" for a in failed)
        raise ValidationFailed(f"deployment check failed: {reasons} (report: {storage.join(output, REPORT)})")
    logs.audit("ExportFinished", export=resource.name, artifacts=len(published))
    return report

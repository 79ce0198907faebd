"""ONNX: the decoder graph (token ids -> logits) with dynamic batch and sequence, exported with the
torch.onnx dynamo exporter and proven in onnxruntime; INT8 by onnxruntime dynamic quantization, judged
by validation perplexity against full precision."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.llama import Llama
from . import perplexity
from .checks import greedy_matches, max_relative_error, verdict
from .formats import FULL_PRECISION, ExportInputs


def write(model: Llama, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, min(16, model.config.max_seq_len)), dtype=torch.long)
    batch, length = torch.export.Dim("batch", max=1024), torch.export.Dim("length", max=model.config.max_seq_len)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_shapes={"tokens": {0: batch, 1: length}},
            verbose=False,
        )
    program.save(str(out), external_data=False)
    return out


def quantize_int8(source: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8)
    return out


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _logits(session: Any, tokens: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(["logits"], {"input_ids": tokens.numpy().astype(np.int64)})[0])


def _sequence_logits(session: Any) -> perplexity.SequenceLogits:
    return lambda ids: _logits(session, torch.tensor([ids]))[0]


@torch.no_grad()
def validate(
    out: Path, model: Llama, prompts: list[list[int]], greedy_tokens: int, max_relative_error_limit: float
) -> dict[str, Any]:
    import onnxruntime

    session = _session(out)
    run = lambda x: _logits(session, x)  # noqa: E731
    worst = max_relative_error(model, prompts, run, batch=2)  # batch 2: the batch axis is dynamic too
    return verdict(
        f"onnxruntime {onnxruntime.__version__}",
        worst,
        greedy_matches(model, prompts[0], greedy_tokens, run),
        max_relative_error_limit,
    )


def validate_quantized(quantized: Path, full: Path, windows: list[list[int]], max_increase: float) -> dict[str, Any]:
    import onnxruntime

    reference = perplexity.measure(_sequence_logits(_session(full)), windows)
    measured = perplexity.measure(_sequence_logits(_session(quantized)), windows)
    return perplexity.verdict(
        f"onnxruntime {onnxruntime.__version__}", reference, measured, max_increase, "full precision"
    )


class Onnx:
    """ONNX as an export format: `model.onnx`, and `model.int8.onnx` for `quantization: int8`."""

    def quantization(self, model: Llama, requested: str) -> str | None:
        return "int8" if requested == "int8" else None

    def write(self, inputs: ExportInputs, staging: Path, quantization: str) -> Path:
        if quantization == FULL_PRECISION:
            return write(inputs.model, staging / "model.onnx")
        return quantize_int8(staging / "model.onnx", staging / "model.int8.onnx")

    def validate(self, inputs: ExportInputs, artifact: Path) -> dict[str, Any]:
        limits = inputs.limits
        return validate(artifact, inputs.model, inputs.prompts, limits.greedy_tokens, limits.max_relative_error)

    def validate_quantized(self, inputs: ExportInputs, artifact: Path, full: Path, quantization: str) -> dict[str, Any]:
        return validate_quantized(artifact, full, inputs.draw_windows(), inputs.limits.max_perplexity_increase)


FORMAT = Onnx()

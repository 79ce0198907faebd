"""ONNX: the decoder graph (token ids -> logits) with dynamic batch and sequence, exported with the
torch.onnx dynamo exporter and proven in onnxruntime; INT8 by onnxruntime dynamic quantization, judged
by validation perplexity against full precision."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.llama import Llama
from .checks import greedy_matches, max_relative_error, verdict


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


def perplexity(session: Any, windows: list[list[int]]) -> float:
    total, count = 0.0, 0
    for window in windows:
        tokens = torch.tensor([window])
        logits = _logits(session, tokens[:, :-1])
        total += float(torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:], reduction="sum"))
        count += len(window) - 1
    return math.exp(total / count)


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

    reference, measured = perplexity(_session(full), windows), perplexity(_session(quantized), windows)
    increase = measured / reference - 1
    result = {
        "runtime": f"onnxruntime {onnxruntime.__version__}",
        "perplexity": measured,
        "perplexityIncrease": increase,
        "passed": increase <= max_increase,
    }
    if not result["passed"]:
        result["message"] = (
            f"validation perplexity {measured:.3f} is {increase:.1%} above full precision"
            f" ({reference:.3f}); limit {max_increase:.1%}"
        )
    return result

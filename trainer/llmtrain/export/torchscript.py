"""TorchScript: the traced forward (token ids -> logits), loaded back with `torch.jit.load`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..model.llama import Llama
from .checks import greedy_matches, max_relative_error, verdict
from .formats import ExportInputs, FullPrecisionOnly


def write(model: Llama, out: Path) -> Path:
    example = torch.zeros((1, min(16, model.config.max_seq_len)), dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out))
    return out


@torch.no_grad()
def validate(
    out: Path, model: Llama, prompts: list[list[int]], greedy_tokens: int, max_relative_error_limit: float
) -> dict[str, Any]:
    loaded = torch.jit.load(str(out))
    # prompts of several lengths: the trace must not be tied to its example's shape
    worst = max_relative_error(model, prompts, loaded)
    return verdict(
        f"torch.jit {torch.__version__}",
        worst,
        greedy_matches(model, prompts[0], greedy_tokens, loaded),
        max_relative_error_limit,
    )


class TorchScript(FullPrecisionOnly):
    """TorchScript as an export format: `model.torchscript.pt`, full precision only."""

    def write(self, inputs: ExportInputs, staging: Path, quantization: str) -> Path:
        return write(inputs.model, staging / "model.torchscript.pt")

    def validate(self, inputs: ExportInputs, artifact: Path) -> dict[str, Any]:
        limits = inputs.limits
        return validate(artifact, inputs.model, inputs.prompts, limits.greedy_tokens, limits.max_relative_error)


FORMAT = TorchScript()

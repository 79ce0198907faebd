"""TorchScript: the traced forward (token ids -> logits), loaded back with `torch.jit.load`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..model.llama import Llama
from .checkpoint import greedy


def write(model: Llama, out: Path) -> Path:
    example = torch.zeros((1, min(16, model.config.max_seq_len)), dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(out))
    return out


@torch.no_grad()
def validate(
    out: Path, model: Llama, prompts: list[list[int]], greedy_tokens: int, max_relative_error: float
) -> dict[str, Any]:
    loaded = torch.jit.load(str(out))
    worst = 0.0
    for prompt in prompts:  # prompts of several lengths: the trace must not be tied to its example's shape
        inputs = torch.tensor([prompt])
        ours, theirs = model(inputs), loaded(inputs)
        worst = max(worst, float((ours - theirs).abs().max() / ours.abs().max()))
    match = greedy(model, prompts[0], greedy_tokens) == greedy(loaded, prompts[0], greedy_tokens)
    result = {"runtime": f"torch.jit {torch.__version__}", "maxRelativeError": worst, "greedyMatch": match}
    result["passed"] = worst <= max_relative_error and match
    if not result["passed"]:
        result["message"] = f"logits differ by {worst:.2e} or greedy continuation differs"
    return result

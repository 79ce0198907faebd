"""The deployment check every quantized artifact passes, whatever its runtime: validation perplexity
against the full-precision artifact in the same runtime."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

#: Logits (one row per token) of a runtime for a sequence of token ids.
SequenceLogits = Callable[[list[int]], torch.Tensor]


def measure(logits_of: SequenceLogits, windows: list[list[int]]) -> float:
    """exp of the mean next-token cross-entropy over the windows."""
    total, count = 0.0, 0
    for window in windows:
        targets = torch.tensor(window[1:])
        total += float(torch.nn.functional.cross_entropy(logits_of(window[:-1]), targets, reduction="sum"))
        count += len(targets)
    return math.exp(total / count)


def verdict(
    runtime: str, reference: float, measured: float, max_increase: float, baseline: str, **extra: Any
) -> dict[str, Any]:
    """The validation record of a quantized artifact (`extra` follows the runtime), with the reason when
    its perplexity rises above `baseline`'s (`reference`) by more than `max_increase`."""
    increase = measured / reference - 1
    result = {
        "runtime": runtime,
        **extra,
        "perplexity": measured,
        "perplexityIncrease": increase,
        "passed": increase <= max_increase,
    }
    if not result["passed"]:
        result["message"] = (
            f"validation perplexity {measured:.3f} is {increase:.1%} above {baseline}"
            f" ({reference:.3f}); limit {max_increase:.1%}"
        )
    return result

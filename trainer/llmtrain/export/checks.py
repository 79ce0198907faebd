"""The deployment check every full-precision artifact passes, whatever its runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..model.llama import Llama
from .checkpoint import ExportError, greedy

Logits = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def max_relative_error(model: Llama, prompts: list[list[int]], logits_of: Logits, batch: int = 1) -> float:
    """Largest |ours - theirs| / max |ours| over the prompts (each repeated `batch` times)."""
    worst = 0.0
    for prompt in prompts:
        inputs = torch.tensor([prompt] * batch)
        ours = model(inputs)
        worst = max(worst, float((ours - logits_of(inputs)).abs().max() / ours.abs().max()))
    return worst


def greedy_matches(model: Llama, prompt: list[int], tokens: int, logits_of: Logits) -> bool:
    return greedy(model, prompt, tokens) == greedy(model, prompt, tokens, logits_of=logits_of)


def verdict(
    runtime: str, worst: float, greedy_match: bool, limit: float, tokenizer_match: bool | None = None, **extra: Any
) -> dict[str, Any]:
    """The validation record of a full-precision artifact, with the reasons when it fails."""
    result: dict[str, Any] = {"runtime": runtime, "maxRelativeError": worst, "greedyMatch": greedy_match, **extra}
    if tokenizer_match is not None:
        result["tokenizerMatch"] = tokenizer_match
    reasons = []
    if worst > limit:
        reasons.append(f"logits differ by {worst:.2e} (limit {limit:.0e})")
    if not greedy_match:
        reasons.append("greedy continuation differs")
    if tokenizer_match is False:
        reasons.append("tokenizer ids differ from the training tokenizer")
    result["passed"] = not reasons
    if reasons:
        result["message"] = "; ".join(reasons)
    return result


#: A probe text every tokenizer of an English corpus encodes and decodes back (whitespace and case aside).
PROBE = "The king and the queen speak of love and war, and of the night."


def check_tokenizer(tokenizer: Any, vocab_size: int, where: str) -> None:
    """The dataset's tokenizer fits the model: as many ids as embedding rows, and a probe text's ids are
    all below that and decode back to the text. A tokenizer swapped for another vocabulary is refused."""
    fix = "the dataset's tokenizer was replaced or is another DataSource's: --data must be the run's DataSource"
    if tokenizer.vocab_size != vocab_size:
        raise ExportError(f"{where}: the tokenizer has {tokenizer.vocab_size} ids, the model {vocab_size}; {fix}")
    ids = tokenizer.encode_batch([PROBE])[0]
    if not ids or min(ids) < 0 or max(ids) >= vocab_size:
        raise ExportError(f"{where}: the tokenizer gives ids outside the model's 0..{vocab_size - 1}; {fix}")
    if _squash(tokenizer.decode(ids)) != _squash(PROBE):
        raise ExportError(f"{where}: the tokenizer does not decode its own ids back to the probe text; {fix}")


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()

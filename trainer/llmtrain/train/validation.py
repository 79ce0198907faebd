"""Validation: when (every `validation.everySteps` and at the last step) and the figures it returns."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..model.llama import Llama
from .distributed import World
from .step import MicroBatches


class Validator:
    """Measures the model on fixed validation batches (this rank's share); never validates without any.
    `batches`: one dataset's, or a mixture's by source name with each source's share (`shares`)."""

    def __init__(
        self,
        model: Llama,
        batches: MicroBatches | dict[str, MicroBatches],
        every_steps: int,
        world: World,
        shares: dict[str, float] | None = None,
    ) -> None:
        self.model, self.every_steps, self.world = model, every_steps, world
        self.sets = batches if isinstance(batches, dict) else {"": batches}
        self.shares = shares or dict.fromkeys(self.sets, 1.0)
        self.batches = [batch for batches_of in self.sets.values() for batch in batches_of]

    def should_validate(self, step: int, last_step: bool = False) -> bool:
        """After the `step`-th completed step: every `everySteps`, and at the last step."""
        return bool(self.batches) and (step % self.every_steps == 0 or last_step)

    def validate(self) -> dict[str, Any]:
        """`valLoss`, `perplexity` and `accuracy` (next token) over all ranks' batches; empty without tokens.
        A mixture adds `sources` ({name: valLoss}); its valLoss and accuracy are the sources' share-weighted
        means (the loss on the training mixture), over the sources that have validation tokens."""
        if len(self.sets) == 1:
            return evaluate(self.model, self.batches, self.world)
        measured = {name: evaluate(self.model, batches, self.world) for name, batches in self.sets.items()}
        measured = {name: figures for name, figures in measured.items() if figures}
        if not measured:
            return {}
        total = sum(self.shares[name] for name in measured)
        val_loss = sum(self.shares[n] * f["valLoss"] for n, f in measured.items()) / total
        accuracy = sum(self.shares[n] * f["accuracy"] for n, f in measured.items()) / total
        return {
            "valLoss": val_loss,
            "perplexity": math.exp(min(val_loss, 50)),
            "accuracy": accuracy,
            "sources": {name: figures["valLoss"] for name, figures in measured.items()},
        }


def evaluate(model: Llama, batches: MicroBatches, world: World) -> dict[str, float]:
    """Mean validation loss, perplexity and next-token accuracy over all ranks' batches."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for inputs, targets in batches:
            inputs, targets = inputs.to(world.device), targets.to(world.device)
            logits = model(inputs).float()
            loss = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
            )
            totals += torch.tensor(
                [loss.item(), (logits.argmax(-1) == targets).sum().item(), targets.numel()], dtype=torch.float64
            )
    model.train()
    if world.distributed:
        totals = totals.to(world.device) if world.device.type == "cuda" else totals
        torch.distributed.all_reduce(totals)
    if totals[2] == 0:
        return {}
    val_loss = float(totals[0] / totals[2])
    return {"valLoss": val_loss, "perplexity": math.exp(min(val_loss, 50)), "accuracy": float(totals[1] / totals[2])}

"""Where a run stands between steps: what a checkpoint records beside the weights, and what reports show."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainState:
    step: int = 0  # completed steps
    tokens_seen: int = 0
    loss: float | None = None  # the last completed step's training loss
    val_loss: float | None = None  # the last validation loss

    def advance(self, loss: float, tokens: int) -> None:
        """One more step done: its loss, and the tokens it consumed (all ranks together)."""
        self.step += 1
        self.tokens_seen += tokens
        self.loss = loss

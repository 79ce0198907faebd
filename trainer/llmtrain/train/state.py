"""Where a run stands between steps: what a checkpoint records beside the weights, and what reports show."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainState:
    step: int = 0  # completed steps
    tokens_seen: int = 0
    loss: float | None = None  # the last completed step's training loss
    val_loss: float | None = None  # the last validation loss
    tokens_by_source: dict[str, int] = field(default_factory=dict)  # training tokens drawn from each DataSource

    def advance(self, loss: float, tokens: int, by_source: dict[str, int] | None = None) -> None:
        """One more step done: its loss, and the tokens it consumed (all ranks together), by source."""
        self.step += 1
        self.tokens_seen += tokens
        self.loss = loss
        for name, drawn in (by_source or {}).items():
            self.tokens_by_source[name] = self.tokens_by_source.get(name, 0) + drawn

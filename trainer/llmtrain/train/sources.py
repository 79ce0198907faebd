"""What each DataSource of the run gave: tokens drawn, epochs, its validation loss, and when it repeats.

Windows are drawn at random positions, so a source never "ends"; it is used up once the tokens drawn from
it reach its train tokens (one epoch), after which its windows repeat what was seen. That moment is an
alert (`DataRepeated`, a warning), once per epoch, so a small source in a mixture never repeats unnoticed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.progress import Alert
from .anomalies import raised
from .mixture import Mixture
from .state import TrainState


class SourceTracker:
    def __init__(self, mixture: Mixture, seq_len: int) -> None:
        self.mixture, self.seq_len = mixture, seq_len
        self.val_loss: dict[str, float] = {}

    def drawn(self, step: int) -> dict[str, int]:
        """Training tokens each source gives to optimizer step `step` (all ranks)."""
        windows = self.mixture.windows(step)
        return {name: int(count) * self.seq_len for name, count in zip(self.mixture.names, windows, strict=True)}

    def drawn_until(self, steps: int) -> dict[str, int]:
        """Tokens drawn from each source in the first `steps` steps (for a checkpoint that did not record them)."""
        count = self.mixture.global_sequences * steps
        names = self.mixture.names
        if len(names) == 1:
            return {names[0]: count * self.seq_len}
        totals = np.zeros(len(names), dtype=np.int64)
        for first in range(0, count, 1 << 22):  # in chunks: bounded memory for long runs
            totals += np.bincount(self.mixture.assignment(first, min(1 << 22, count - first)), minlength=len(names))
        return {name: int(total) * self.seq_len for name, total in zip(names, totals, strict=True)}

    def repeated(self, state: TrainState, step_tokens: dict[str, int]) -> list[Alert]:
        """A warning for each source whose drawn tokens (`step_tokens` of them in the step just counted) just
        passed a whole number of epochs."""
        alerts = []
        for source in self.mixture.sources:
            now = state.tokens_by_source.get(source.name, 0)
            before, after = (now - step_tokens[source.name]) // source.train_tokens, now // source.train_tokens
            if after > before:
                message = (
                    f"DataSource {source.name}: its {source.train_tokens:,} train tokens have been drawn {after}x"
                    f" (epoch {after + 1} starts at step {state.step}); its windows now repeat"
                )
                alerts.append(raised("DataRepeated", "warning", message, state.step - 1))
        return alerts

    def figures(self, state: TrainState, validation: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The progress report's `sources`: name, share, tokens drawn, epochs, last validation loss."""
        if validation:
            measured = validation.get("sources") or {self.mixture.names[0]: validation.get("valLoss")}
            self.val_loss.update({name: loss for name, loss in measured.items() if loss is not None})
        out = []
        for source in self.mixture.sources:
            tokens = state.tokens_by_source.get(source.name, 0)
            item = {
                "name": source.name,
                "weight": round(source.share, 6),
                "tokensSeen": tokens,
                "epochs": round(tokens / source.train_tokens, 4),
            }
            if source.name in self.val_loss:
                item["valLoss"] = self.val_loss[source.name]
            out.append(item)
        return out

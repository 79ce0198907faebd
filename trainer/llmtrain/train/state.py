"""Where a run stands between steps: what a checkpoint records beside the weights, and what reports show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .loss_scale import LossScale


@dataclass
class TrainState:
    step: int = 0  # completed steps
    tokens_seen: int = 0
    loss: float | None = None  # the last completed step's training loss
    val_loss: float | None = None  # the last validation loss
    tokens_by_source: dict[str, int] = field(default_factory=dict)  # training tokens drawn from each DataSource
    skipped_steps: int = 0  # fp16: completed steps whose update was skipped (overflowing gradients)
    loss_scale: LossScale | None = None  # fp16: the loss scaler after the last step; None under bf16 and fp32

    def advance(
        self,
        loss: float,
        tokens: int,
        by_source: dict[str, int] | None = None,
        *,
        skipped: bool = False,
        loss_scale: LossScale | None = None,
    ) -> None:
        """One more step done: its loss, and the tokens it consumed (all ranks together), by source; under
        fp16 whether its update was skipped, and the loss scale after it."""
        self.step += 1
        self.tokens_seen += tokens
        self.loss = loss
        for name, drawn in (by_source or {}).items():
            self.tokens_by_source[name] = self.tokens_by_source.get(name, 0) + drawn
        self.skipped_steps += int(skipped)
        self.loss_scale = loss_scale

    def scaling_record(self) -> dict[str, Any]:
        """What meta.json records of fp16's loss scaling: `skippedSteps`, and `lossScale` under fp16."""
        record: dict[str, Any] = {"skippedSteps": self.skipped_steps}
        if self.loss_scale is not None:
            record["lossScale"] = self.loss_scale.to_json()
        return record

    def restore_scaling(self, meta: dict[str, Any]) -> None:
        """The loss scaling a checkpoint's meta.json recorded; what is missing or malformed starts afresh."""
        skipped = meta.get("skippedSteps")
        valid = isinstance(skipped, int) and not isinstance(skipped, bool) and skipped >= 0
        self.skipped_steps = skipped if valid else 0
        self.loss_scale = LossScale.from_json(meta.get("lossScale"))

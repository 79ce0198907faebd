"""fp16's dynamic loss scale: the loss multiplied up before backward so that small gradients survive fp16's
narrow range, the gradients divided back before clipping, and a step whose gradients overflowed (inf or NaN
on any rank) skipped with the scale halved; after `GROWTH_INTERVAL` good steps in a row the scale doubles.

One process uses `torch.amp.GradScaler`; FSDP2 `ShardedGradScaler`, which agrees across ranks on whether
any gradient overflowed (an inf on one rank skips the step on every rank). bf16 and fp32 need no scale:
they get no scaler. A skipped step still counts as a step (the data position and the learning rate are
functions of the step, as in torch AMP). A skip that leaves the scale below `MIN_SCALE` means the
gradients overflow fp16 even unscaled: that step is a divergence, and the alert suggests bf16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..core.progress import Alert
from .anomalies import raised
from .precision import Precision

INIT_SCALE = 2.0**16  # torch AMP's default: a few steps may be skipped at the start while the scale settles
GROWTH_INTERVAL = 2000
MIN_SCALE = 1.0  # below 1 the true gradients themselves overflow fp16


@dataclass(frozen=True)
class LossScale:
    """The scaler's state between steps, as a checkpoint records it (meta.json's `lossScale`)."""

    scale: float
    growth_tracker: int  # good steps in a row since the scale last changed

    def to_json(self) -> dict[str, Any]:
        return {"scale": self.scale, "growthTracker": self.growth_tracker}

    @classmethod
    def from_json(cls, raw: Any) -> LossScale | None:
        """A recorded state, or None when `raw` is not one (the scaler then starts afresh)."""
        if not isinstance(raw, dict):
            return None
        scale, tracker = raw.get("scale"), raw.get("growthTracker")
        scale_ok = isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale)
        tracker_ok = isinstance(tracker, int) and not isinstance(tracker, bool) and tracker >= 0
        return cls(float(scale), tracker) if scale_ok and scale > 0 and tracker_ok else None


class LossScaler:
    """`scale(loss).backward()` per micro-batch, `unscale(optimizer)` before clipping, then `step(optimizer)`."""

    def __init__(self, device_type: str, sharded: bool, init_scale: float = INIT_SCALE) -> None:
        if sharded:  # needs the process group: found infs are all-reduced in unscale_
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            self._scaler: torch.amp.GradScaler = ShardedGradScaler(
                device_type, init_scale=init_scale, growth_interval=GROWTH_INTERVAL
            )
        else:
            self._scaler = torch.amp.GradScaler(device_type, init_scale=init_scale, growth_interval=GROWTH_INTERVAL)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss times the current scale, to call backward on."""
        return self._scaler.scale(loss)

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """The gradients divided back to their true size, and checked for inf/NaN (on all ranks together)."""
        self._scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """After `unscale`: the scale updated from the overflow check, then the optimizer steps unless the
        scale fell (a gradient overflowed on some rank: the same answer on every rank); whether it skipped.

        Not `GradScaler.step`: with a fused optimizer it hands the optimizer the check's flag, and
        `ShardedGradScaler`'s (shape [1]) breaks fused AdamW (which expects a scalar), as under FSDP2 on GPUs."""
        before = self._scaler.get_scale()
        self._scaler.update()
        skipped = self._scaler.get_scale() < before
        if not skipped:
            optimizer.step()
        return skipped

    @property
    def state(self) -> LossScale:
        recorded = self._scaler.state_dict()
        return LossScale(float(recorded["scale"]), int(recorded["_growth_tracker"]))

    def load(self, state: LossScale | None) -> None:
        """Continue from a checkpoint's state (None: keep the initial scale)."""
        if state is not None:
            recorded = {**self._scaler.state_dict(), "scale": state.scale, "_growth_tracker": state.growth_tracker}
            self._scaler.load_state_dict(recorded)


def loss_scaler(precision: Precision) -> LossScaler | None:
    """fp16's scaler on this device and world; None under bf16 and fp32."""
    return LossScaler(precision.device_type, precision.sharded) if precision.loss_scaling else None


def skip_alert(step: int, scale: float) -> Alert:
    """A skipped step's alert: a warning naming the new scale, or the divergence once it falls below MIN_SCALE."""
    if scale < MIN_SCALE:
        return raised(
            "NonFiniteLoss",
            "critical",
            f"fp16 gradients overflow at step {step} even with the loss scale at {scale:g} (below {MIN_SCALE:g}:"
            " they overflow unscaled); stopping: train in bf16 (spec.training.precision: bf16), which has fp32's"
            " range, or lower the learning rate",
            step,
        )
    return raised(
        "StepSkipped",
        "warning",
        f"fp16 gradients overflowed at step {step}: the update was skipped and the loss scale lowered to {scale:g}",
        step,
    )

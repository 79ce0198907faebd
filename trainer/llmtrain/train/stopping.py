"""Stopping before maxSteps, decided at a step boundary and the same on every rank."""

from __future__ import annotations

import signal
from typing import Any

from . import distributed
from .distributed import World

PAUSED, INTERRUPTED = "Paused", "Interrupted"


class StopRequest:
    """SIGTERM (torchrun forwards it when the pod is evicted or the Job suspended) asks to stop: Interrupted.
    `--stop-at-step N` stops after step N: Paused. Either way the state is checkpointed first (a save still
    being written in the background completes before, `CheckpointManager.save(stopping=True)`). The SIGTERM
    handler is installed when this is made: before, SIGTERM ends the process as usual."""

    def __init__(self, world: World, stop_at_step: int | None) -> None:
        self.world, self.stop_at_step = world, stop_at_step
        self.signalled = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def check(self, step: int) -> str | None:
        """After the `step`-th completed step: INTERRUPTED (SIGTERM on any rank), PAUSED, or None to go on."""
        if distributed.any_true(self.signalled, self.world):  # every rank asks, every step: all stop together
            return INTERRUPTED
        return PAUSED if step == self.stop_at_step else None

"""The training loop's checkpoints: when to save, what a save records beside the weights, and who hears of it.

The files, pointers and retention are `checkpoint.Checkpointer`'s; this decides when it writes: every
`checkpointing.everySteps`, at the last step, before stopping (SIGTERM, `--stop-at-step`), and on
divergence only while every weight is finite. With `asyncSave` (the default) a save returns once the state
is staged and its files are written in the background; it completes (meta.json, `latest`, `best`,
retention) on the training thread at the first step boundary where every rank's write is done (`poll`,
each step), or when the next save, a stop, the last step or a divergence waits for it (`wait`). Only one
save is in flight. The last step's save and a stop's wait for their write; SIGTERM waits for the save in
flight, then saves the step it stopped at. Each completed save goes to the audit stream
(`CheckpointSaved`), the progress report (`latestCheckpoint`, `bestCheckpoint`) and the `on_complete`
callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import logs, storage
from ..core.progress import Alert, CheckpointRef
from .anomalies import raised
from .checkpoint import Checkpointer, Pending, Saved
from .distributed import World, all_true, any_true
from .progress import Reporter
from .state import TrainState


class CheckpointManager:
    def __init__(
        self,
        checkpointer: Checkpointer,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        state: TrainState,
        every_steps: int,
        record: dict[str, Any],
        progress: Reporter,
        run: str,
    ) -> None:
        """`record`: what every meta.json carries besides the state (the seed, the model shape)."""
        self.checkpointer, self.model, self.optimizer, self.state = checkpointer, model, optimizer, state
        self.every_steps, self.record, self.progress, self.run = every_steps, record, progress, run
        #: the step of the checkpoint this process saved or resumed from last: the state there is on disk
        self.checkpointed_step: int | None = None
        #: the save whose files are being written (at most one)
        self.pending: Pending | None = None
        #: called on every rank, on the training thread, once a save is complete (`latest` names it)
        self.on_complete: list[Callable[[Saved], None]] = []

    @property
    def world(self) -> World:
        return self.checkpointer.world

    @property
    def uri(self) -> str:
        return self.checkpointer.uri

    def should_save(self, step: int, last_step: bool = False, stopping: bool = False) -> bool:
        """After the `step`-th completed step: every `everySteps`, at the last step, and before stopping."""
        return step % self.every_steps == 0 or last_step or stopping

    def save(self, step: int, *, last_step: bool = False, stopping: bool = False) -> bool:
        """At each step boundary: complete the save in flight if its files are written on every rank; then
        begin the save of the state after `step` completed steps when `should_save` says so (after the one
        in flight completes), waiting for it at the last step and before stopping. Whether it began one."""
        self.poll()
        if not self.should_save(step, last_step, stopping):
            return False
        self._begin(step)
        if last_step or stopping or not self.checkpointer.background:
            self.wait()
        return True

    def poll(self) -> bool:
        """Complete the save in flight if every rank's files are written (a collective while one is in
        flight: every rank began the same saves); whether one completed."""
        if self.pending is None or not all_true(self.pending.written(), self.world):
            return False
        self._complete()
        return True

    def wait(self) -> None:
        """Complete the save in flight, if any, waiting for its files."""
        self._complete()

    def close(self) -> None:
        """Free the staging buffers. Normal exits have completed every save (last step, stop, divergence);
        on an error a write still in flight is left to end with the process, as a kill would leave it."""
        self.pending = None
        self.checkpointer.close()

    def save_diverged(self, step: int) -> bool:
        """On divergence: save with `diverged: true` only if every weight, on every rank, is finite (a
        checkpoint of NaN weights is no good state: `latest` keeps naming the last good one). A divergence
        in the step right after a checkpoint (or a resume) has its good state saved already."""
        self.wait()
        if step == self.checkpointed_step:
            return True
        if not weights_finite(self.model, self.world):
            return False
        self._begin(step, diverged=True)
        self.wait()
        return True

    def latest(self) -> str | None:
        return self.checkpointer.latest()

    def resume(self) -> list[Alert]:
        """Load the newest complete checkpoint that verifies into the model, optimizer and state; the
        `CheckpointSkipped` alerts for what was passed over (the operator shows them in status.alerts)."""
        resumed = self.checkpointer.resume(self.model, self.optimizer, self.record["model"])
        if self.world.is_main:
            for reason in resumed.skipped:
                logs.audit("CheckpointSkipped", run=self.run, checkpoints=self.uri, reason=reason)
        if resumed.name:
            meta = resumed.meta
            self.state.step, self.state.tokens_seen = meta["step"], meta.get("tokensSeen", 0)
            self.state.tokens_by_source = _counts(meta.get("tokensBySource"))
            self.state.restore_scaling(meta)
            self.checkpointed_step = self.state.step
            where = storage.join(self.uri, resumed.name)
            logs.audit(
                "Resumed",
                run=self.run,
                step=self.state.step,
                checkpoint=where,
                fromWorldSize=meta.get("worldSize"),
                worldSize=self.world.size,
            )
            self.progress.record(
                latest_checkpoint=CheckpointRef(self.state.step, where),
                best_checkpoint=self._reference(self.checkpointer.best()),
            )
        origin = resumed.name or "step 0"
        return [
            raised("CheckpointSkipped", "warning", f"resumed from {origin}: {reason}", self.state.step)
            for reason in resumed.skipped
        ]

    def _begin(self, step: int, **extra: Any) -> None:
        """Begin a save (the one in flight completed first: one at a time), meta.json's content taken now."""
        self.wait()
        state = self.state
        meta = {
            "tokensSeen": state.tokens_seen,
            "tokensBySource": state.tokens_by_source,
            **state.scaling_record(),
            **self.record,
            "loss": state.loss,
            "valLoss": state.val_loss,
        }
        self.pending = self.checkpointer.begin(step, self.model, self.optimizer, {**meta, **extra})

    def _complete(self) -> None:
        """Finish the save in flight (every rank): meta.json and the pointers; then tell who listens."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        saved = self.checkpointer.finish(pending)
        self.checkpointed_step = saved.step
        if self.world.is_main:
            logs.audit("CheckpointSaved", run=self.run, step=saved.step, uri=saved.uri)
            self.progress.update(
                force=True,
                latest_checkpoint=CheckpointRef(saved.step, saved.uri, saved.time),
                best_checkpoint=self._reference(saved.best),
            )
        for callback in self.on_complete:
            callback(saved)

    def _reference(self, entry: tuple[str, dict[str, Any]] | None) -> CheckpointRef | None:
        """The progress report's `bestCheckpoint` for a (name, meta.json) pair."""
        if entry is None:
            return None
        name, meta = entry
        return CheckpointRef(meta["step"], storage.join(self.uri, name), val_loss=meta["valLoss"])


def weights_finite(model: torch.nn.Module, world: World) -> bool:
    """Whether every weight, on every rank, is finite."""
    local = all(bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()) for p in model.parameters())
    return not any_true(not local, world)


def _counts(recorded: Any) -> dict[str, int]:
    """meta.json's tokensBySource when it is {name: count}; else nothing (the loop counts again)."""
    if not isinstance(recorded, dict):
        return {}
    ok = all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in recorded.items()
    )
    return dict(recorded) if ok else {}

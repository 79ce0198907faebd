"""What the trainer says, and when.

After every step the progress report (throttled by `progress.Reporter`); every `logEverySteps` and at
the last step a log line and the metrics (loss, lr, grad norm, tokens/s, MFU, peak memory; under fp16
the loss scale and the skipped steps so far), with the validation figures when measured; at once, alerts
and lifecycle events, to the audit stream and the report. Rank 0 speaks; the other ranks only keep count.
Tokens/s and MFU count training time only: validation and checkpoint saves run `paused()`, or every
checkpoint would read as a throughput drop.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

from .. import logs
from ..core.progress import Alert, format_eta
from .anomalies import AnomalyDetector
from .distributed import World
from .progress import Metrics, Reporter
from .state import TrainState
from .step import StepOutcome
from .stopping import PAUSED

log = logging.getLogger("llmtrain.train")


class Throughput:
    """Tokens per second since the last reading, less the time paused, and the MFU that makes:
    tokens/s x FLOPs per token / (peak x processes); no MFU without a known peak."""

    def __init__(
        self, flops_per_token: float, peak: float | None, processes: int, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.flops_per_token, self.peak, self.processes, self.clock = flops_per_token, peak, processes, clock
        self._started, self._tokens, self._paused = clock(), 0, 0.0

    def add(self, tokens: int) -> None:
        self._tokens += tokens

    @contextmanager
    def paused(self) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self._paused += self.clock() - started

    def read(self) -> tuple[float, float | None]:
        """(tokens per second, MFU) over the window, and a new window from now."""
        window = max(self.clock() - self._started - self._paused, 1e-9)
        tokens_per_second = self._tokens / window
        self._started, self._tokens, self._paused = self.clock(), 0, 0.0
        mfu = tokens_per_second * self.flops_per_token / (self.peak * self.processes) if self.peak else None
        return tokens_per_second, mfu


class StepReporter:
    def __init__(
        self,
        run: str,
        world: World,
        total_steps: int,
        log_every: int,
        tokens_per_step: int,
        throughput: Throughput,
        progress: Reporter,
        metrics: Metrics,
        detector: AnomalyDetector,
    ) -> None:
        self.run, self.world, self.total_steps, self.log_every = run, world, total_steps, log_every
        self.tokens_per_step, self.throughput = tokens_per_step, throughput
        self.progress, self.metrics, self.detector = progress, metrics, detector
        self.step_seconds: float | None = None  # moving average, for the ETA

    def should_log(self, step: int, last_step: bool = False) -> bool:
        """After the `step`-th completed step: every `logEverySteps`, and at the last step."""
        return step % self.log_every == 0 or last_step

    def paused(self) -> AbstractContextManager[None]:
        """Time not counted as training (validation, checkpoint saves)."""
        return self.throughput.paused()

    def started(self, step: int, parameters: int) -> None:
        if self.world.is_main:
            logs.audit(
                "TrainingStarted",
                run=self.run,
                step=step,
                totalSteps=self.total_steps,
                worldSize=self.world.size,
                parameters=parameters,
            )

    def alert(self, alert: Alert | None) -> None:
        """To the audit stream and the progress report (written at once)."""
        if alert is not None and self.world.is_main:
            logs.audit("Alert", run=self.run, **alert.to_json())
            self.progress.alert(alert)

    def trained(
        self,
        outcome: StepOutcome,
        state: TrainState,
        validation: dict[str, Any] | None,
        sources: list[dict[str, Any]] | None = None,
    ) -> None:
        """A step done (`state` already counts it); `validation`: the figures when it was measured after it;
        `sources`: each DataSource's figures (the report's `sources`)."""
        step = state.step
        self._time(outcome.seconds)
        self.throughput.add(self.tokens_per_step)
        logged = self.should_log(step, step == self.total_steps)
        values = self._measure(outcome, state) if logged else {}
        if validation is not None:
            values.update({f"val/{key}": value for key, value in validation.items() if key != "sources"})
        if self.world.is_main and values:
            self.metrics.log(step, values, sources)
        if sources is not None:
            self.progress.record(sources=sources)
        if validation is not None:
            self.progress.update(
                force=True, val_loss=validation.get("valLoss"), perplexity=validation.get("perplexity")
            )
        self.progress.update(
            step=step, tokens_seen=state.tokens_seen, loss=round(outcome.loss, 4), eta=self._eta(step), **_speed(values)
        )

    def halted(self, step: int, phase: str) -> None:
        """Stopped before maxSteps after a checkpoint: PAUSED (`--stop-at-step`) or INTERRUPTED (SIGTERM)."""
        if self.world.is_main:
            if phase == PAUSED:
                logs.audit("TrainingPaused", run=self.run, step=step)
            else:
                logs.audit("TrainingInterrupted", run=self.run, step=step, reason="SIGTERM")
            self.progress.update(force=True, phase=phase)
        self.metrics.close()

    def failed(self, step: int, reason: str, message: str) -> None:
        self.progress.update(force=True, phase="Failed", failure={"reason": reason, "message": message})
        logs.audit("TrainingFailed", run=self.run, reason=reason, step=step, message=message)

    def finished(self, state: TrainState) -> None:
        self.metrics.close()
        if self.world.is_main:
            self.progress.update(force=True, phase="Succeeded", step=self.total_steps, eta=None)
            logs.audit("TrainingFinished", run=self.run, step=self.total_steps, loss=state.loss, valLoss=state.val_loss)

    def _measure(self, outcome: StepOutcome, state: TrainState) -> dict[str, float | None]:
        """The figures of a logged step; the log line; a throughput drop alerted."""
        step = state.step
        tokens_per_second, mfu = self.throughput.read()
        values = {
            "loss": outcome.loss,
            "lr": outcome.lr,
            "gradNorm": outcome.grad_norm,
            "tokensPerSecond": tokens_per_second,
            "mfu": mfu,
            "memoryMiB": memory_mib(self.world.device),
            **_scaling(outcome, state),
        }
        self.alert(self.detector.check_throughput(step - 1, tokens_per_second))  # alerts name the 0-based step
        if self.world.is_main:
            line = (
                f"step {step}/{self.total_steps} loss {outcome.loss:.4f} lr {outcome.lr:.2e}"
                f" grad {_grad_text(outcome)} {tokens_per_second:,.0f} tok/s mfu {f'{mfu:.1%}' if mfu else 'n/a'}"
                f" eta {self._eta(step)}"
            )
            log.info(line, extra={"step": step, **{k: v for k, v in values.items() if v is not None}})
            logs.human(line)
        return values

    def _time(self, seconds: float) -> None:
        """The moving average of step times the ETA is made of."""
        self.step_seconds = seconds if self.step_seconds is None else 0.9 * self.step_seconds + 0.1 * seconds

    def _eta(self, step: int) -> str | None:
        return format_eta(self.step_seconds * (self.total_steps - step)) if self.step_seconds is not None else None


def _scaling(outcome: StepOutcome, state: TrainState) -> dict[str, float | None]:
    """fp16's figures: the loss scale after the step (`lossScale`) and the steps skipped so far (`skippedSteps`)."""
    if outcome.loss_scale is None:
        return {}
    return {"lossScale": outcome.loss_scale.scale, "skippedSteps": state.skipped_steps}


def _grad_text(outcome: StepOutcome) -> str:
    """The log line's gradient norm; a skipped fp16 step's, with the scale it left."""
    scale = f" scale {outcome.loss_scale.scale:g}" if outcome.loss_scale is not None else ""
    if outcome.skipped:
        return f"skipped{scale}"
    return f"{outcome.grad_norm:.3f}{scale}" if outcome.grad_norm is not None else f"n/a{scale}"


def _speed(values: dict[str, float | None]) -> dict[str, float]:
    """The progress report's tokens/s and MFU from a logged step's figures; none between logs (they stay)."""
    speed: dict[str, float] = {}
    if values.get("tokensPerSecond") is not None:
        speed["tokens_per_second"] = round(values["tokensPerSecond"])
    if values.get("mfu"):
        speed["mfu"] = round(values["mfu"], 4)
    return speed


def memory_mib(device: torch.device) -> float:
    """Peak memory of this process: allocated on its GPU, else the resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""Built-in anomaly alerts: non-finite loss, loss spikes, gradient-norm blow-ups, throughput drops."""

from __future__ import annotations

import math
import time

from ..api.trainingrun import AlertsSpec
from ..core.progress import Alert

#: Observations before spike and throughput alerts arm (the early loss falls fast and is noisy).
WARMUP_OBSERVATIONS = 20


def raised(type_: str, severity: str, message: str, step: int) -> Alert:
    """An alert raised now, at `step` (the progress report's `Alert`, stamped with the time)."""
    return Alert(type_, severity, message, step, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def is_divergence(alert: Alert | None) -> bool:
    """Whether the alert stops the run: a non-finite loss or gradient norm."""
    return alert is not None and alert.type == "NonFiniteLoss"


class RunningMean:
    """An exponential moving average that knows how many values it has seen."""

    def __init__(self, decay: float = 0.9) -> None:
        self.decay, self.value, self.count = decay, 0.0, 0

    def update(self, x: float) -> None:
        self.value = x if self.count == 0 else self.decay * self.value + (1 - self.decay) * x
        self.count += 1


class AnomalyDetector:
    def __init__(self, spec: AlertsSpec) -> None:
        self.spec = spec
        self.loss = RunningMean()
        self.throughput = RunningMean(0.8)

    def check_loss(self, step: int, loss: float) -> Alert | None:
        """NonFiniteLoss (critical) or LossSpike (warning); updates the running mean otherwise."""
        if not math.isfinite(loss):
            return raised("NonFiniteLoss", "critical", f"loss is {loss} at step {step}; stopping", step)
        alert = None
        if self.loss.count >= WARMUP_OBSERVATIONS and loss > self.spec.loss_spike_factor * self.loss.value:
            alert = raised(
                "LossSpike",
                "warning",
                f"loss {loss:.4f} is {loss / self.loss.value:.1f}x its running mean {self.loss.value:.4f}",
                step,
            )
        self.loss.update(loss)
        return alert

    def check_grad_norm(self, step: int, norm: float) -> Alert | None:
        """NonFiniteLoss (critical: the loss's gradient overflowed) or GradNormHigh (warning)."""
        if not math.isfinite(norm):
            return raised("NonFiniteLoss", "critical", f"gradient norm is {norm} at step {step}; stopping", step)
        if self.spec.grad_norm_max is not None and norm > self.spec.grad_norm_max:
            return raised(
                "GradNormHigh",
                "warning",
                f"gradient norm {norm:.3g} exceeds gradNormMax {self.spec.grad_norm_max:g}",
                step,
            )
        return None

    def check_throughput(self, step: int, tokens_per_second: float) -> Alert | None:
        alert = None
        floor = self.spec.throughput_drop_fraction * self.throughput.value
        if self.throughput.count >= WARMUP_OBSERVATIONS // 4 and tokens_per_second < floor:
            alert = raised(
                "ThroughputDrop",
                "warning",
                f"{tokens_per_second:,.0f} tokens/s is below {self.spec.throughput_drop_fraction:.0%} of the running"
                f" mean {self.throughput.value:,.0f}",
                step,
            )
        self.throughput.update(tokens_per_second)
        return alert

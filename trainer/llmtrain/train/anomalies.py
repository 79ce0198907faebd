"""Built-in anomaly alerts: non-finite loss, loss spikes, gradient-norm blow-ups, throughput drops."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..api.trainingrun import AlertsSpec

#: Observations before spike and throughput alerts arm (the early loss falls fast and is noisy).
WARMUP_OBSERVATIONS = 20


@dataclass
class RaisedAlert:
    type: str
    severity: str
    message: str
    step: int
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "severity": self.severity,
            "message": self.message,
            "step": self.step,
            "time": self.time,
        }


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

    def check_loss(self, step: int, loss: float) -> RaisedAlert | None:
        """NonFiniteLoss (critical) or LossSpike (warning); updates the running mean otherwise."""
        if not math.isfinite(loss):
            return RaisedAlert("NonFiniteLoss", "critical", f"loss is {loss} at step {step}; stopping", step)
        alert = None
        if self.loss.count >= WARMUP_OBSERVATIONS and loss > self.spec.loss_spike_factor * self.loss.value:
            alert = RaisedAlert(
                "LossSpike",
                "warning",
                f"loss {loss:.4f} is {loss / self.loss.value:.1f}x its running mean {self.loss.value:.4f}",
                step,
            )
        self.loss.update(loss)
        return alert

    def check_grad_norm(self, step: int, norm: float) -> RaisedAlert | None:
        """NonFiniteLoss (critical: the loss's gradient overflowed) or GradNormHigh (warning)."""
        if not math.isfinite(norm):
            return RaisedAlert("NonFiniteLoss", "critical", f"gradient norm is {norm} at step {step}; stopping", step)
        if self.spec.grad_norm_max is not None and norm > self.spec.grad_norm_max:
            return RaisedAlert(
                "GradNormHigh",
                "warning",
                f"gradient norm {norm:.3g} exceeds gradNormMax {self.spec.grad_norm_max:g}",
                step,
            )
        return None

    def check_throughput(self, step: int, tokens_per_second: float) -> RaisedAlert | None:
        alert = None
        floor = self.spec.throughput_drop_fraction * self.throughput.value
        if self.throughput.count >= WARMUP_OBSERVATIONS // 4 and tokens_per_second < floor:
            alert = RaisedAlert(
                "ThroughputDrop",
                "warning",
                f"{tokens_per_second:,.0f} tokens/s is below {self.spec.throughput_drop_fraction:.0%} of the running"
                f" mean {self.throughput.value:,.0f}",
                step,
            )
        self.throughput.update(tokens_per_second)
        return alert

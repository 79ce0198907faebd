"""The progress report (version 1): what rank 0 of a trainer tells the operator, and the one type both
sides use. The trainer's `Reporter` fills a `ProgressReport` and writes `to_json()`; the core reads what a
pod wrote with `ProgressReport.from_json()`, which trusts nothing: a field of the wrong type is dropped,
strings are clipped, and a document that is not a version-1 report is no report at all.

Field names are snake_case here and camelCase on the wire (`tokens_per_second` <-> `tokensPerSecond`),
the same spelling the TrainingRun status uses for the figures it copies (`STATUS_FIGURES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

PROGRESS_VERSION = 1
MAX_ALERTS = 20
#: A mixture names at most 16 DataSources (`spec.data`), and the status keeps as many.
MAX_SOURCES = 16
SEVERITIES = ("warning", "critical")


def camel(name: str) -> str:
    """`tokens_per_second` -> `tokensPerSecond`."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def format_eta(seconds: float | None) -> str | None:
    """`1h02m`, `1m05s`: the ETA as the status and the log lines show it."""
    if seconds is None:
        return None
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass
class CheckpointRef:
    """A saved checkpoint: its step, where it is, when, and its validation loss when measured."""

    step: int
    uri: str
    time: str | None = None
    val_loss: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "uri": self.uri}
        if self.time:
            out["time"] = self.time
        if self.val_loss is not None:
            out["valLoss"] = self.val_loss
        return out

    @classmethod
    def from_json(cls, data: Any) -> CheckpointRef | None:
        if not isinstance(data, dict):
            return None
        step, uri = _integer(data.get("step")), _text(data.get("uri"), 4096)
        if step is None or uri is None:
            return None
        return cls(step, uri, _text(data.get("time"), 64), _number(data.get("valLoss")))


@dataclass
class Alert:
    """An anomaly: LossSpike, NonFiniteLoss, GradNormHigh, ThroughputDrop (trainer), Stalled (operator)."""

    type: str
    severity: str
    message: str
    step: int | None = None
    time: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "severity": self.severity, "message": self.message}
        if self.step is not None:
            out["step"] = self.step
        if self.time:
            out["time"] = self.time
        return out

    @classmethod
    def from_json(cls, data: Any) -> Alert | None:
        """An alert as the status keeps it: type at most 64 characters, message 4096, unknown severity a warning."""
        if not isinstance(data, dict) or not data.get("type"):
            return None
        severity = data.get("severity") if data.get("severity") in SEVERITIES else "warning"
        return cls(
            str(data["type"])[:64],
            severity,
            str(data.get("message", ""))[:4096],
            _integer(data.get("step")),
            _text(data.get("time"), 64),
        )

    @property
    def identity(self) -> tuple[str, int | None, str | None]:
        return self.type, self.step, self.time


def source_figures(data: Any) -> dict[str, Any] | None:
    """One DataSource's figures as the status keeps them (`status.sources[]`): name (at most 253
    characters) and weight required, tokensSeen, epochs and valLoss kept when they are numbers."""
    if not isinstance(data, dict):
        return None
    name, weight = _text(data.get("name"), 253), _number(data.get("weight"))
    if name is None or weight is None:
        return None
    out: dict[str, Any] = {"name": name, "weight": weight}
    for key, read in (("tokensSeen", _integer), ("epochs", _number), ("valLoss", _number)):
        value = read(data.get(key))
        if value is not None:
            out[key] = value
    return out


@dataclass
class ProgressReport:
    """Rank 0's figures. `phase` is Running, Paused, Interrupted, Failed or Succeeded. `sources` holds
    each DataSource of the run's data in wire form ({name, weight (its share), tokensSeen, epochs,
    valLoss}); `initialized_from` the weights the run started from (spec.init), as the trainer loaded them."""

    run: str
    total_steps: int
    phase: str = "Running"
    step: int = 0
    tokens_seen: int = 0
    loss: float | None = None
    val_loss: float | None = None
    perplexity: float | None = None
    tokens_per_second: float | None = None
    mfu: float | None = None
    eta: str | None = None
    latest_checkpoint: CheckpointRef | None = None
    best_checkpoint: CheckpointRef | None = None
    alerts: list[Alert] = field(default_factory=list)
    started_at: str | None = None
    updated_at: str | None = None
    failure: dict[str, str] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    initialized_from: str | None = None

    def add_alert(self, alert: Alert) -> None:
        self.alerts = [*self.alerts, alert][-MAX_ALERTS:]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": PROGRESS_VERSION}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, CheckpointRef):
                value = value.to_json()
            elif item.name == "alerts":
                value = [alert.to_json() for alert in value]
            elif item.name == "failure" and value is None:
                continue
            out[camel(item.name)] = value
        return out

    @classmethod
    def from_json(cls, data: Any) -> ProgressReport | None:
        """The report a pod wrote, or None when it is not a version-1 report."""
        if not isinstance(data, dict) or data.get("version") != PROGRESS_VERSION:
            return None
        alerts = [Alert.from_json(item) for item in data.get("alerts") or [] if isinstance(item, dict)]
        sources = [source_figures(item) for item in _items(data.get("sources"))]
        return cls(
            run=_text(data.get("run"), 253) or "",
            total_steps=_integer(data.get("totalSteps")) or 0,
            phase=_text(data.get("phase"), 32) or "Running",
            step=_integer(data.get("step")) or 0,
            tokens_seen=_integer(data.get("tokensSeen")) or 0,
            loss=_number(data.get("loss")),
            val_loss=_number(data.get("valLoss")),
            perplexity=_number(data.get("perplexity")),
            tokens_per_second=_number(data.get("tokensPerSecond")),
            mfu=_number(data.get("mfu")),
            eta=_text(data.get("eta"), 64),
            latest_checkpoint=CheckpointRef.from_json(data.get("latestCheckpoint")),
            best_checkpoint=CheckpointRef.from_json(data.get("bestCheckpoint")),
            alerts=[alert for alert in alerts if alert is not None],
            started_at=_text(data.get("startedAt"), 64),
            updated_at=_text(data.get("updatedAt"), 64),
            sources=[source for source in sources if source is not None][:MAX_SOURCES],
            initialized_from=_text(data.get("initializedFrom"), 4096),
        )

    def status_figures(self) -> dict[str, Any]:
        """The figures the TrainingRun status copies, by their status names (unset ones left out)."""
        figures = {camel(name): getattr(self, name) for name in FIGURES}
        if self.tokens_per_second is not None:
            figures["tokensPerSecond"] = int(self.tokens_per_second)
        figures["sources"] = [dict(source) for source in self.sources] or None
        return {key: value for key, value in figures.items() if value is not None}


#: The report's figures the status copies as they are (tokens per second as an integer).
FIGURES = ("tokens_seen", "loss", "val_loss", "perplexity", "tokens_per_second", "mfu", "eta")
#: Status fields that change with every report (a write carrying only these may wait for the throttle).
STATUS_FIGURES = frozenset(["step", "progress", "lastProgressTime", "sources", *map(camel, FIGURES)])

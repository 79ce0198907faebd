"""What the trainer tells the world: metrics sinks and the progress report for the operator.

The progress report is a small, versioned JSON document (`core.progress.ProgressReport`) that rank 0 writes
at most every `min_interval` seconds and at every lifecycle event. Sinks:
- `FileSink`: atomic writes to a file (local runner; or a file the operator reads);
- `ConfigMapSink` (`configmap://<namespace>/<name>`): a ConfigMap only the run's ServiceAccount may patch.
Metrics go to a JSONL file, TensorBoard event files and a Prometheus endpoint (rank 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from .. import storage
from ..core.progress import Alert, ProgressReport

log = logging.getLogger("llmtrain.train")


class ProgressSink(Protocol):
    def write(self, report: dict[str, Any]) -> None: ...


def make_sink(uri: str) -> ProgressSink:
    """configmap://<namespace>/<name> (in a cluster), else a file or storage URI."""
    if uri.startswith("configmap://"):
        from .kube_sink import ConfigMapSink

        return ConfigMapSink(uri)
    return FileSink(uri)


class FileSink:
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def write(self, report: dict[str, Any]) -> None:
        storage.write_bytes(self.uri, json.dumps(report, indent=2).encode())


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Reporter:
    """Holds the latest `ProgressReport` and pushes it to the sinks: at most every `min_interval` seconds,
    and at once when forced (lifecycle events, alerts, checkpoints). The first write is never held back."""

    def __init__(self, run: str, total_steps: int, sinks: list[ProgressSink], min_interval: float = 5.0) -> None:
        self.sinks, self.min_interval = sinks, min_interval
        self.report = ProgressReport(run=run, total_steps=total_steps, started_at=now_iso())
        self._written: float | None = None  # monotonic time of the last write; None: never written

    def record(self, **fields: Any) -> None:
        """Change figures (`ProgressReport` field names) without writing: the next write carries them."""
        self.report = dataclasses.replace(self.report, **fields)

    def update(self, force: bool = False, **fields: Any) -> None:
        """Change figures and write the report when forced or when the throttle allows."""
        self.record(**fields)
        now = time.monotonic()
        if force or self._written is None or now - self._written >= self.min_interval:
            self._write()
            self._written = now

    def alert(self, alert: Alert) -> None:
        """Add an alert (the report keeps the last MAX_ALERTS) and write at once."""
        self.report.add_alert(alert)
        self.update(force=True)

    def _write(self) -> None:
        self.report.updated_at = now_iso()
        document = self.report.to_json()
        for sink in self.sinks:
            try:
                sink.write(document)
            except OSError as exc:  # a report is never worth a failed run
                log.warning("progress report not written", extra={"error": str(exc)})


class Metrics:
    """JSONL, TensorBoard and Prometheus sinks for scalar metrics (rank 0 only)."""

    def __init__(self, directory: Path | None, run: str, prometheus_port: int | None) -> None:
        self._jsonl = None
        self._tensorboard = None
        self._gauges: dict[str, Any] = {}
        self._prometheus: Any = None
        self.run = run
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._jsonl = (directory / "metrics.jsonl").open("a")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(directory / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed: no event files")
        if prometheus_port:
            import prometheus_client

            prometheus_client.start_http_server(prometheus_port)
            self._prometheus = prometheus_client

    def log(self, step: int, values: dict[str, float | None], sources: list[dict[str, Any]] | None = None) -> None:
        """One step's figures: a JSONL line (each DataSource's figures under `sources`, by name), TensorBoard
        scalars (`source/<name>/<figure>`) and Prometheus gauges (`llmtrain_train_<figure>{run}`,
        `llmtrain_train_source_<figure>{run, source}`: a DataSource's name is a label, never a metric name)."""
        values = {k: v for k, v in values.items() if v is not None}
        by_source = {item["name"]: _source_figures(item) for item in sources or []}
        if self._jsonl is not None:
            line = {"step": step, "time": time.time(), **values, **({"sources": by_source} if by_source else {})}
            self._jsonl.write(json.dumps(line) + "\n")
            self._jsonl.flush()
        if self._tensorboard is not None:
            for key, value in values.items():
                self._tensorboard.add_scalar(key, value, step)
            for name, figures in by_source.items():
                for key, value in figures.items():
                    self._tensorboard.add_scalar(f"source/{name}/{key}", value, step)
            self._tensorboard.flush()
        if self._prometheus is not None:
            for key, value in {"step": step, **values}.items():
                self._gauge("llmtrain_train_" + key.replace("/", "_"), key, ["run"]).labels(run=self.run).set(value)
            for name, figures in by_source.items():
                for key, value in figures.items():
                    gauge = self._gauge(f"llmtrain_train_source_{key}", f"{key} of one DataSource", ["run", "source"])
                    gauge.labels(run=self.run, source=name).set(value)

    def _gauge(self, name: str, what: str, labels: list[str]) -> Any:
        if name not in self._gauges:
            self._gauges[name] = self._prometheus.Gauge(name, f"llmtrain trainer {what}", labels)
        return self._gauges[name]

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def prometheus_port() -> int | None:
    port = os.environ.get("LLMTRAIN_METRICS_PORT")
    return int(port) if port else None


def _source_figures(item: dict[str, Any]) -> dict[str, float]:
    """A DataSource's figures as metrics: tokens drawn, epochs, validation loss (what is known)."""
    return {k: v for k, v in item.items() if k in ("tokensSeen", "epochs", "valLoss") and v is not None}

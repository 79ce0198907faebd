"""What the trainer tells the world: metrics sinks and the progress report for the operator.

The progress report is a small, versioned JSON document (`core.progress.ProgressReport`) that rank 0 writes
at most every `min_interval` seconds and at every lifecycle event. Sinks:
- `FileSink`: atomic writes to a file (local runner; or a file the operator reads);
- `ConfigMapSink` (`configmap://<namespace>/<name>`): a ConfigMap only the run's ServiceAccount may patch.
Metrics go to a JSONL file and TensorBoard event files (copied beside the checkpoints by `MetricsSync`),
a Prometheus endpoint and, with `spec.tracking.mlflow`, an MLflow run (rank 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import storage
from ..core.progress import Alert, ProgressReport
from .metrics_sync import MetricsSync, metrics_uri
from .tracking import RUN_RECORD, MlflowTracker, open_tracker

if TYPE_CHECKING:
    from ..api.trainingrun import TrainingRun

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


def open_metrics(run: TrainingRun, directory: Path | None, checkpoints: str, main: bool) -> Metrics:
    """Rank 0's metrics: files in `directory` kept beside the checkpoints (`<checkpoints>/metrics/`), the
    Prometheus endpoint, the MLflow run; the other ranks' log nothing."""
    if not main:
        return Metrics(None, run.name, None)
    stored = metrics_uri(checkpoints)
    sync = MetricsSync(directory, stored) if directory is not None else None
    return Metrics(directory, run.name, prometheus_port(), sync, open_tracker(run, storage.join(stored, RUN_RECORD)))


class Metrics:
    """JSONL, TensorBoard, Prometheus and MLflow sinks for scalar metrics (rank 0 only). `sync` copies the
    files to storage (`sync()`: at each completed checkpoint; and at `close()`)."""

    def __init__(
        self,
        directory: Path | None,
        run: str,
        prometheus_port: int | None,
        sync: MetricsSync | None = None,
        tracker: MlflowTracker | None = None,
    ) -> None:
        self._jsonl = None
        self._tensorboard = None
        self._gauges: dict[str, Any] = {}
        self._prometheus: Any = None
        self._sync, self._tracker = sync, tracker
        self.run = run
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            if sync is not None:
                sync.restore()  # a resumed run's new pod continues the stored file
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
        scalars and MLflow metrics (`source/<name>/<figure>`), and Prometheus gauges (`llmtrain_train_<figure>{run}`,
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
        if self._tracker is not None:
            per_source = {f"source/{n}/{k}": v for n, figures in by_source.items() for k, v in figures.items()}
            self._tracker.log(step, {**values, **per_source})

    def _gauge(self, name: str, what: str, labels: list[str]) -> Any:
        if name not in self._gauges:
            self._gauges[name] = self._prometheus.Gauge(name, f"llmtrain trainer {what}", labels)
        return self._gauges[name]

    def sync(self) -> None:
        """Copy the files that changed to storage (at each completed checkpoint); a failure only warns."""
        if self._sync is not None:
            self._sync.sync()

    def close(self) -> None:
        """Close the files and copy them to storage (again harmless: nothing changed, nothing copied)."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        self.sync()

    def end(self, status: str) -> None:
        """Training over, however it ended: the files closed and copied, the MLflow run given its final
        status (`tracking.terminal_status`), waiting a bounded time for an unreachable server."""
        self.close()
        if self._tracker is not None:
            self._tracker.finish(status)
            self._tracker = None


def prometheus_port() -> int | None:
    port = os.environ.get("LLMTRAIN_METRICS_PORT")
    return int(port) if port else None


def _source_figures(item: dict[str, Any]) -> dict[str, float]:
    """A DataSource's figures as metrics: tokens drawn, epochs, validation loss (what is known)."""
    return {k: v for k, v in item.items() if k in ("tokensSeen", "epochs", "valLoss") and v is not None}

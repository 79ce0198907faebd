"""The operator's Prometheus metrics (names are the contract for dashboards and alert rules)."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from llmtrain.core.status import parse_time

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("llmtrain_reconciles_total", "Reconcile passes.", ["kind"], registry=r)
        self.errors = Counter("llmtrain_reconcile_errors_total", "Reconcile passes that raised.", ["kind"], registry=r)
        self.latency = Histogram(
            "llmtrain_reconcile_seconds",
            "Time of one reconcile pass.",
            ["kind"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.status_writes = Counter("llmtrain_status_writes_total", "Status patches written.", ["kind"], registry=r)
        self.resources = Gauge("llmtrain_resources", "Resources by kind and phase.", ["kind", "phase"], registry=r)
        self.cached = Gauge("llmtrain_cache_objects", "Objects in the watch cache, by kind.", ["kind"], registry=r)
        self.queue_depth = Gauge("llmtrain_work_queue_depth", "Resources waiting for a reconcile.", registry=r)
        self.step = Gauge("llmtrain_run_step", "Last completed step.", ["namespace", "run"], registry=r)
        self.total_steps = Gauge(
            "llmtrain_run_total_steps", "spec.training.maxSteps.", ["namespace", "run"], registry=r
        )
        self.loss = Gauge("llmtrain_run_loss", "Recent training loss.", ["namespace", "run"], registry=r)
        self.val_loss = Gauge("llmtrain_run_val_loss", "Last validation loss.", ["namespace", "run"], registry=r)
        self.tokens = Gauge("llmtrain_run_tokens_per_second", "Training throughput.", ["namespace", "run"], registry=r)
        self.mfu = Gauge("llmtrain_run_mfu", "Model FLOPs utilization (0-1).", ["namespace", "run"], registry=r)
        self.restarts = Gauge("llmtrain_run_restarts", "Retryable failures resumed.", ["namespace", "run"], registry=r)
        self.checkpoint_time = Gauge(
            "llmtrain_run_checkpoint_timestamp_seconds",
            "When the latest checkpoint was saved (Unix time).",
            ["namespace", "run"],
            registry=r,
        )
        self.alerts = Gauge(
            "llmtrain_run_alerts", "Alerts in the run's status, by type.", ["namespace", "run", "type"], registry=r
        )
        self.phase = Gauge(
            "llmtrain_run_phase",
            "1 for the run's current phase, 0 for the others.",
            ["namespace", "run", "phase"],
            registry=r,
        )
        self.last_progress = Gauge(
            "llmtrain_run_last_progress_timestamp_seconds",
            "When the step last advanced (Unix time).",
            ["namespace", "run"],
            registry=r,
        )
        self._phases: dict[tuple[str, str, str], str] = {}

    def _move(self, key: tuple[str, str, str], phase: str | None) -> None:
        """Count a resource under its new phase (None: deleted); O(1) per reconcile."""
        old = self._phases.pop(key, None)
        if phase is not None:
            self._phases[key] = phase
        if old == phase:
            return
        if old is not None:
            self.resources.labels(key[0], old).dec()
        if phase is not None:
            self.resources.labels(key[0], phase).inc()

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def observe(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        """Update the per-resource gauges from a status the operator computed."""
        kind, meta = body["kind"], body["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        phase = status.get("phase") or "Pending"
        self._move(key, phase)
        if kind != "TrainingRun":
            return
        labels = (meta["namespace"], meta["name"])
        for p in PHASES:
            self.phase.labels(*labels, p).set(1 if p == phase else 0)
        for gauge, field in (
            (self.step, "step"),
            (self.total_steps, "totalSteps"),
            (self.loss, "loss"),
            (self.val_loss, "valLoss"),
            (self.tokens, "tokensPerSecond"),
            (self.mfu, "mfu"),
            (self.restarts, "restarts"),
        ):
            if isinstance(status.get(field), (int, float)):
                gauge.labels(*labels).set(status[field])
        for gauge, when in (
            (self.checkpoint_time, (status.get("latestCheckpoint") or {}).get("time")),
            (self.last_progress, status.get("lastProgressTime")),
        ):
            moment = parse_time(when)
            if moment is not None:
                gauge.labels(*labels).set(moment.timestamp())
        counts: dict[str, int] = {}
        for alert in status.get("alerts") or []:
            counts[alert["type"]] = counts.get(alert["type"], 0) + 1
        for type_, count in counts.items():
            self.alerts.labels(*labels, type_).set(count)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self._move((kind, namespace, name), None)
        if kind == "TrainingRun":
            for gauge in (
                self.step,
                self.total_steps,
                self.loss,
                self.val_loss,
                self.tokens,
                self.mfu,
                self.restarts,
                self.checkpoint_time,
                self.last_progress,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, name)
            for phase in PHASES:
                with contextlib.suppress(KeyError):
                    self.phase.remove(namespace, name, phase)

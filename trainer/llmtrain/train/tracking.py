"""Rank 0's run on an MLflow tracking server (`spec.tracking.mlflow`), through its REST API.

The run is found or created on a background thread, so training never waits for the server: params (the
spec's model and training fields, flattened), each logged step's metrics, and at the end the run's status
(FINISHED, FAILED, or KILLED for an interrupted or paused run). Metrics wait in a bounded queue; while the
server is unreachable each batch is retried with backoff and then dropped, counted (a warning when it
starts, when it ends and at the end of training), never a failed run. A resumed run continues the same
MLflow run: its id is kept in storage beside the metrics (`<checkpoint uri>/metrics/mlflow-run.json`)
and the run is set RUNNING again. Credentials come from a Secret only: MLFLOW_TRACKING_TOKEN (a bearer
token) or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; they are never logged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import exitcodes, secrets, storage
from .mlflow_rest import MlflowError, MlflowRest, authorization

if TYPE_CHECKING:
    from ..api.trainingrun import TrainingRun

log = logging.getLogger("llmtrain.train")

RUN_RECORD = "mlflow-run.json"
TOKEN_KEY, USERNAME_KEY, PASSWORD_KEY = "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
#: MLflow's limits per log-batch call
MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_PARAM_LENGTH = 1000, 100, 6000
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


@dataclass(frozen=True)
class _Finish:
    status: str


_START = object()  # the first task: find or create the run at once, so it shows while training starts


def open_tracker(run: TrainingRun, record_uri: str | None) -> MlflowTracker | None:
    """The run's MLflow tracker when `spec.tracking.mlflow` is set (rank 0 only)."""
    spec = run.spec.tracking.mlflow if run.spec.tracking is not None else None
    if spec is None:
        return None
    secret = spec.credentials_secret_ref.name if spec.credentials_secret_ref is not None else None
    rest = MlflowRest(spec.uri, credentials(secret))
    model = run.spec.model.to_wire() if run.spec.model is not None else {}
    params = flatten({"model": model, "training": run.spec.training.to_wire(), "data": dict(run.spec.mixture())})
    tags = {"llmtrain.dev/trainingrun": run.name}
    if os.environ.get("POD_NAMESPACE"):
        tags["llmtrain.dev/namespace"] = os.environ["POD_NAMESPACE"]
    return MlflowTracker(rest, spec.experiment, run.name, params, tags, record_uri)


def credentials(secret_name: str | None) -> str | None:
    """The Authorization header from the mounted Secret, if one is named (a Secret without the keys, or
    unreadable, warns: tracking goes on without credentials)."""
    if secret_name is None:
        return None
    try:
        token = secrets.read_optional(secret_name, TOKEN_KEY)
        user = secrets.read_optional(secret_name, USERNAME_KEY)
        password = secrets.read_optional(secret_name, PASSWORD_KEY)
    except OSError as exc:
        log.warning(f"Secret {secret_name} unreadable: MLflow without credentials", extra={"error": exc.strerror})
        return None
    header = authorization(token, user, password)
    if header is None:
        log.warning(
            f"Secret {secret_name} has neither {TOKEN_KEY} nor {USERNAME_KEY} and {PASSWORD_KEY}: MLflow without"
            " credentials"
        )
    return header


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested spec fields as MLflow params: `training.optimizer.lr` -> "0.0003"; lists as JSON."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def metric_value(value: float) -> float | str:
    """MLflow's JSON for a double: non-finite values as the strings protobuf reads ("NaN", "Infinity")."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def terminal_status(exit_code: int | None, reached_last_step: bool) -> str:
    """FINISHED after the last step, FAILED on an exception (None) or divergence, else KILLED (interrupted
    by SIGTERM, or paused at --stop-at-step: a rerun sets the run RUNNING again)."""
    if exit_code == exitcodes.OK and reached_last_step:
        return FINISHED
    if exit_code in (exitcodes.OK, exitcodes.RETRYABLE):
        return KILLED
    return FAILED


class MlflowTracker:
    def __init__(
        self,
        rest: MlflowRest,
        experiment: str,
        run_name: str,
        params: dict[str, str],
        tags: dict[str, str],
        record_uri: str | None,
        max_queued: int = 10_000,
        finish_timeout: float = 15.0,
    ) -> None:
        """`record_uri`: where the MLflow run id is kept (a resumed run continues that run); `max_queued`:
        logged steps waiting for the server before new ones are dropped; `finish_timeout`: seconds the end
        of training waits for the queue and the final status."""
        self.rest, self.experiment, self.run_name, self.params, self.tags = rest, experiment, run_name, params, tags
        self.record_uri, self.finish_timeout = record_uri, finish_timeout
        self.run_id: str | None = None
        self._params_logged = False
        self._existing_params: dict[str, Any] = {}
        self._dropped_full = 0  # metric values dropped by the training thread (the queue was full)
        self._dropped_failed = 0  # metric values dropped by the tracker's thread (the server failed)
        self._in_flight = 0  # metric values in the call the tracker's thread is making
        self._queue: queue.Queue[Any] = queue.Queue(max_queued + 1)
        self._queue.put_nowait(_START)
        self._failing = False
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Metric values that never reached the server."""
        return self._dropped_full + self._dropped_failed

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue one step's metrics; never blocks (a full queue drops them, counted)."""
        stamp = int(time.time() * 1000)
        entries = [
            {"key": key, "value": metric_value(float(value)), "timestamp": stamp, "step": step}
            for key, value in metrics.items()
        ]
        if not entries:
            return
        try:
            self._queue.put_nowait(entries)
        except queue.Full:
            if not self._dropped_full:
                log.warning("MLflow is not keeping up: metrics are dropped (counted) until it does")
            self._dropped_full += len(entries)

    def finish(self, status: str) -> bool:
        """Send what is queued and the run's final status, waiting at most `finish_timeout` seconds; whether
        everything arrived. Training ends either way."""
        deadline = time.monotonic() + self.finish_timeout
        while self._thread.is_alive():
            try:
                self._queue.put(_Finish(status), timeout=max(0.0, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        pending = sum(len(item) for item in list(self._queue.queue) if isinstance(item, list))
        if self._thread.is_alive():
            pending += self._in_flight  # a call still retrying when the time ran out
        delivered = not self._thread.is_alive() and not self.dropped and not self._failing
        if not delivered:
            log.warning(
                "MLflow tracking incomplete",
                extra={"dropped": self.dropped + pending, "status": status, "run": self.run_id or "not created"},
            )
        return delivered

    # -- the background thread ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _START:
                self._attempt(lambda: None, 0)
                continue
            if isinstance(item, _Finish):
                self._attempt(lambda status=item.status: self._end(status), 0)
                return
            entries = [*item, *self._more(MAX_METRICS_PER_BATCH - len(item))]
            self._attempt(lambda entries=entries: self._send(entries), len(entries))

    def _more(self, room: int) -> Iterator[dict[str, Any]]:
        """Queued steps that fit in the same call (catching up after an outage); a finish stays queued."""
        while room > 0 and self._queue.queue and isinstance(self._queue.queue[0], list):
            if len(self._queue.queue[0]) > room:
                return
            item = self._queue.get_nowait()
            room -= len(item)
            yield from item

    def _attempt(self, action: Any, values: int) -> None:
        """Run one call (the run made first); a failure drops what it carried, counted, with a warning
        when the server starts failing and when it comes back."""
        self._in_flight = values
        try:
            self._ensure_run()
            action()
        except (MlflowError, OSError, LookupError, TypeError, ValueError) as exc:  # also an answer not MLflow's
            self._dropped_failed += values
            self._in_flight = 0
            if not self._failing:
                log.warning("MLflow tracking failing; metrics are dropped (counted)", extra={"error": str(exc)[:300]})
            self._failing = True
            return
        self._in_flight = 0
        if self._failing:
            log.info("MLflow tracking works again", extra={"dropped": self.dropped})
        self._failing = False

    def _send(self, entries: list[dict[str, Any]]) -> None:
        self.rest.post("runs/log-batch", {"run_id": self.run_id, "metrics": entries})

    def _end(self, status: str) -> None:
        self.rest.post("runs/update", {"run_id": self.run_id, "status": status, "end_time": int(time.time() * 1000)})

    # -- the run ------------------------------------------------------------------------------------

    def _ensure_run(self) -> None:
        """The run found (a resumed run's, set RUNNING again) or created, then its params, once each."""
        if self.run_id is None:
            found = self._recorded_run()
            if found is not None:
                run_id = found["info"]["run_id"]
                self.rest.post("runs/update", {"run_id": run_id, "status": "RUNNING"})
                params = (found.get("data") or {}).get("params") or []
                self._existing_params = {p["key"]: p.get("value") for p in params}
                log.info("MLflow run continued", extra={"run": run_id})
            else:
                run_id = self._create_run()
                log.info("MLflow run created", extra={"run": run_id, "experiment": self.experiment})
            self.run_id = run_id
        if not self._params_logged:
            self._log_params(self._existing_params)
            self._params_logged = True

    def _recorded_run(self) -> dict[str, Any] | None:
        """The run a previous attempt recorded on this server, if it still exists there."""
        if self.record_uri is None or not storage.exists(self.record_uri):
            return None
        try:
            record = json.loads(storage.read_bytes(self.record_uri))
        except ValueError:  # damaged: a new run (and a new record)
            return None
        if not isinstance(record, dict) or record.get("trackingUri") != self.rest.base_uri or not record.get("runId"):
            return None
        try:
            run = self.rest.get("runs/get", run_id=str(record["runId"]))["run"]
        except MlflowError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return run if (run.get("info") or {}).get("lifecycle_stage", "active") == "active" else None

    def _create_run(self) -> str:
        experiment_id = self._experiment_id()
        body = {
            "experiment_id": experiment_id,
            "run_name": self.run_name,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": v} for k, v in self.tags.items()],
        }
        run_id = self.rest.post("runs/create", body)["run"]["info"]["run_id"]
        if self.record_uri is not None:
            record = {"trackingUri": self.rest.base_uri, "experimentId": experiment_id, "runId": run_id}
            try:
                storage.write_bytes(self.record_uri, json.dumps(record, indent=2).encode())
            except OSError as exc:  # a resumed run will start another MLflow run
                log.warning("MLflow run id not stored", extra={"uri": self.record_uri, "error": str(exc)[:300]})
        return run_id

    def _experiment_id(self) -> str:
        try:
            return self.rest.get("experiments/get-by-name", experiment_name=self.experiment)["experiment"][
                "experiment_id"
            ]
        except MlflowError as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            return self.rest.post("experiments/create", {"name": self.experiment})["experiment_id"]
        except MlflowError as exc:  # another run created it meanwhile
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        return self.rest.get("experiments/get-by-name", experiment_name=self.experiment)["experiment"]["experiment_id"]

    def _log_params(self, logged: dict[str, Any]) -> None:
        """Params the run lacks (MLflow refuses to change one: a changed value is a warning)."""
        changed = sorted(k for k, v in self.params.items() if k in logged and logged[k] != v)
        if changed:
            log.warning(
                "spec fields changed since the MLflow run began; its params keep the first values",
                extra={"params": changed[:20]},
            )
        missing = [{"key": k, "value": v} for k, v in self.params.items() if k not in logged]
        for start in range(0, len(missing), MAX_PARAMS_PER_BATCH):
            self.rest.post(
                "runs/log-batch", {"run_id": self.run_id, "params": missing[start : start + MAX_PARAMS_PER_BATCH]}
            )

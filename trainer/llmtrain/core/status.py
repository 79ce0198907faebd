"""Observed Jobs, pods and progress reports -> each kind's status (phase, conditions, figures)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from . import diagnosis, naming
from .conditions import set_condition
from .diagnosis import Finding

STATS_FIELDS = [
    "inputs",
    "documentsIn",
    "documentsOut",
    "bytesIn",
    "rejected",
    "repaired",
    "duplicatesExact",
    "duplicatesNear",
    "dedupPercent",
    "tokensTrain",
    "tokensValidation",
]
#: Figures that change with every report; a status write carrying only these is throttled.
PROGRESS_FIELDS = frozenset(
    [
        "step",
        "progress",
        "tokensSeen",
        "loss",
        "valLoss",
        "perplexity",
        "tokensPerSecond",
        "mfu",
        "eta",
        "lastProgressTime",
    ]
)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def job_phase(job: dict[str, Any] | None, pods: list[dict[str, Any]], expected_pods: int) -> str:
    """Complete, Failed, Suspended, Running (every expected pod running or done), Starting (some not yet),
    Missing. A pod that has succeeded counts as started: between the last pod's success and the Job
    controller's Complete a run is not starting again (seen on the real control plane after an operator
    restart: Running, Pending, Succeeded)."""
    if job is None:
        return "Missing"
    if diagnosis.job_condition(job, "Complete") or diagnosis.job_condition(job, "SuccessCriteriaMet"):
        return "Complete"
    if diagnosis.job_condition(job, "Failed") or diagnosis.job_condition(job, "FailureTarget"):
        return "Failed"
    if job.get("spec", {}).get("suspend"):
        return "Suspended"
    started = {
        (p.get("metadata", {}).get("annotations") or {}).get(
            diagnosis.INDEX_ANNOTATION, p.get("metadata", {}).get("name")
        )
        for p in pods
        if p.get("status", {}).get("phase") in ("Running", "Succeeded")
    }
    return "Running" if len(started) >= expected_pods else "Starting"


def job_pods(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods of this Job (by the controller's job-name label), newest last."""
    if job is None:
        return []
    name = job["metadata"]["name"]
    mine = [p for p in pods if (p.get("metadata", {}).get("labels") or {}).get("batch.kubernetes.io/job-name") == name]
    uid = job["metadata"].get("uid")
    if uid:  # a Job recreated under the same name: only the current one's pods count
        mine = [
            p
            for p in mine
            if (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/controller-uid") in (None, uid)
        ]
    return sorted(mine, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def active_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in pods if p.get("status", {}).get("phase") in (None, "Pending", "Running")]


def final_report(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON report a succeeded pod of the Job left in its termination message."""
    for pod in reversed(job_pods(job, pods)):
        if pod.get("status", {}).get("phase") != "Succeeded":
            continue
        for cs in pod["status"].get("containerStatuses") or []:
            report = diagnosis.termination_report(cs.get("state", {}).get("terminated") or {})
            if report is not None:
                return report
    return None


class StatusBuilder:
    """Accumulates a status: phase, message, conditions with transition times kept, and the summary."""

    def __init__(self, old: dict[str, Any] | None, generation: int | None, now: datetime, summary: str) -> None:
        self.old = old or {}
        self.now, self.generation, self.summary = iso(now), generation, summary
        self.status: dict[str, Any] = {
            k: v for k, v in self.old.items() if k not in ("conditions", "phase", "message", "failure")
        }
        self.status["conditions"] = [dict(c) for c in self.old.get("conditions") or []]
        self.status["observedGeneration"] = generation

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        set_condition(self.status["conditions"], type_, status, reason, message, self.now, self.generation)

    def phase(self, phase: str, reason: str, message: str) -> None:
        self.status["phase"] = phase
        self.status["message"] = message
        done = phase == "Succeeded"
        self.condition(self.summary, done, reason, message)
        self.condition("Running", phase == "Running", reason if phase != "Running" else "Running", message)
        self.condition(
            "Failed",
            phase == "Failed",
            reason if phase == "Failed" else "NotFailed",
            message if phase == "Failed" else "",
        )
        if phase == "Running" and not self.status.get("startTime"):
            self.status["startTime"] = self.now
        if phase in ("Succeeded", "Failed"):
            self.status.setdefault("completionTime", self.now)
        else:
            self.status.pop("completionTime", None)

    def fail(self, finding: Finding) -> None:
        self.phase("Failed", finding.reason, finding.message)
        self.status["failure"] = finding.to_status()

    def waiting_for(self, reason: str, message: str) -> None:
        self.phase("Pending", reason, message)

    def done(self) -> dict[str, Any]:
        return self.status


def job_status(
    builder: StatusBuilder,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    expected_pods: int,
    what: str,
    gpu_resource: str | None = None,
) -> str:
    """Set phase from one Job (Pending/Running/Failed); returns the Job's phase for the caller."""
    mine = job_pods(job, pods)
    state = job_phase(job, mine, expected_pods)
    if state == "Missing":
        builder.waiting_for("Creating", f"creating the {what} Job")
    elif state == "Failed":
        builder.fail(diagnosis.job_failure(job, mine))
    elif state == "Running":
        builder.phase("Running", "Running", f"{what}: {expected_pods} pod(s) running")
    elif state == "Starting":
        stuck = diagnosis.waiting(active_pods(mine), gpu_resource)
        if stuck is not None:
            builder.waiting_for(stuck.reason, stuck.message)
        else:
            builder.waiting_for("Starting", f"{what}: waiting for pods to start")
    return state


def data_stats(report: dict[str, Any]) -> dict[str, Any]:
    stats = report.get("stats") or {}
    return {k: stats[k] for k in STATS_FIELDS if k in stats}


def configmap_report(configmap: dict[str, Any] | None) -> dict[str, Any] | None:
    """The progress report a trainer patched into its ConfigMap (`data["progress.json"]`), if any."""
    text = ((configmap or {}).get("data") or {}).get(naming.PROGRESS_KEY)
    try:
        report = json.loads(text) if text else None
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def checkpoint_ref(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(report, dict) or report.get("step") is None or not report.get("uri"):
        return None
    out = {"step": int(report["step"]), "uri": str(report["uri"])}
    if report.get("time"):
        out["time"] = report["time"]
    if report.get("valLoss") is not None:
        out["valLoss"] = float(report["valLoss"])
    return out


def apply_progress(status: dict[str, Any], report: dict[str, Any] | None, total_steps: int, now: str) -> None:
    """Copy the trainer's figures from its progress report (version 1) into the status."""
    status["totalSteps"] = total_steps
    if not isinstance(report, dict) or report.get("version") != 1:
        status.setdefault("progress", f"{status.get('step') or 0}/{total_steps}")
        return
    step = int(report.get("step") or 0)
    if step > int(status.get("step") or 0) or not status.get("lastProgressTime"):
        status["lastProgressTime"] = now
    status["step"] = step
    status["progress"] = f"{step}/{total_steps}"
    for key in ("tokensSeen", "loss", "valLoss", "perplexity", "mfu", "eta"):
        if report.get(key) is not None:
            status[key] = report[key]
    if report.get("tokensPerSecond") is not None:
        status["tokensPerSecond"] = int(report["tokensPerSecond"])
    for key in ("latestCheckpoint", "bestCheckpoint"):
        ref = checkpoint_ref(report.get(key))
        if ref is not None:
            status[key] = ref
    alerts = [a for a in report.get("alerts") or [] if isinstance(a, dict) and a.get("type")]
    kept = [a for a in status.get("alerts") or [] if a.get("type") == "Stalled"]
    merged = {(a.get("type"), a.get("step"), a.get("time")): a for a in kept + alerts}
    status["alerts"] = [_alert(a) for a in merged.values()][-64:]


def _alert(alert: dict[str, Any]) -> dict[str, Any]:
    out = {
        "type": str(alert["type"])[:64],
        "severity": alert.get("severity") if alert.get("severity") in ("warning", "critical") else "warning",
        "message": str(alert.get("message", ""))[:4096],
    }
    if alert.get("step") is not None:
        out["step"] = int(alert["step"])
    if alert.get("time"):
        out["time"] = alert["time"]
    return out


def progress_only(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether old and new differ only in progress figures (so the write may wait for the throttle)."""
    old = old or {}
    keys = (set(old) | set(new)) - PROGRESS_FIELDS
    return all(old.get(k) == new.get(k) for k in keys)

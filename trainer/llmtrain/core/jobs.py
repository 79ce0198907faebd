"""Reading Jobs and their pods: a Job's phase, its pods, the report its pod left, and sequenced Jobs."""

from __future__ import annotations

from typing import Any

from . import diagnosis, naming
from .context import Context
from .plan import Observed
from .status import StatusBuilder

#: Seconds until a Job whose pods are missing is looked at again: the Job controller's failed pod creations
#: change no object the operator watches (they are Events), so no watch event would bring it back.
MISSING_PODS_RECHECK_SECONDS = 10.0


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


def finished(job: dict[str, Any]) -> bool:
    """Whether the Job controller has declared the Job done, either way."""
    return any(
        diagnosis.job_condition(job, type_) for type_ in ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")
    )


def missing_pods(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> bool:
    """Whether the Job controller has fewer pods than the Job runs at once (pending, running or done) while
    the Job runs: it could not create them (its FailedCreate Events say why) or has not yet."""
    if job is None or job.get("spec", {}).get("suspend") or finished(job):
        return False
    alive = [
        p for p in job_pods(job, pods) if p.get("status", {}).get("phase") in (None, "Pending", "Running", "Succeeded")
    ]
    return len(alive) < int(job.get("spec", {}).get("parallelism") or 1)


def recheck_missing_pods(job: dict[str, Any] | None, pods: list[dict[str, Any]], ctx: Context) -> float | None:
    """When to look at a Job again whose pods are missing in a cluster (locally every pod is made at once)."""
    return MISSING_PODS_RECHECK_SECONDS if not ctx.local and missing_pods(job, pods) else None


def queued(builder: StatusBuilder, queue_name: str | None) -> None:
    """Pending while Kueue holds the Job suspended in its queue (or, without one, until it is unsuspended)."""
    if queue_name:
        builder.waiting_for("Queued", f"queued in Kueue LocalQueue {queue_name}: waiting for admission")
    else:
        builder.waiting_for("Suspended", "the Job is suspended: it resumes once unsuspended")


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


def job_status(
    builder: StatusBuilder,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    expected_pods: int,
    what: str,
    gpu_resource: str | None = None,
    events: list[dict[str, Any]] | None = None,
) -> str:
    """Set phase from one Job (Pending/Running/Failed); returns the Job's phase for the caller. `events`:
    Warning Events about the resource's Jobs (why the Job controller could not create a pod)."""
    mine = job_pods(job, pods)
    state = job_phase(job, mine, expected_pods)
    if state == "Missing":
        builder.waiting_for("Creating", f"creating the {what} Job")
    elif state == "Failed":
        builder.fail(diagnosis.job_failure(job, mine))
    elif state == "Running":
        builder.phase("Running", "Running", f"{what}: {expected_pods} pod(s) running")
    elif state == "Starting":
        refused = diagnosis.creation_failure(job, events or [], mine) if missing_pods(job, mine) else None
        stuck = refused or diagnosis.waiting(active_pods(mine), gpu_resource)
        if stuck is not None:
            builder.waiting_for(stuck.reason, stuck.message)
        else:
            builder.waiting_for("Starting", f"{what}: waiting for pods to start")
    return state


def stale(job: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    """Whether an existing Job was made from another spec (its template is immutable: it is replaced)."""
    have = ((job or {}).get("metadata", {}).get("labels") or {}).get(naming.SPEC_HASH)
    return job is not None and have != want["metadata"]["labels"][naming.SPEC_HASH]


def run_in_turn(
    builder: StatusBuilder,
    wanted: list[tuple[dict[str, Any], int, str]],
    observed: Observed,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Jobs (manifest, expected pods, what it does) that run one after another (ingest stages): the
    status of the first unfinished one. A Job whose spec changed is deleted (pods get their grace period)
    and recreated next time. Returns the Jobs wanted now, the ones to delete, and the state."""
    desired: list[dict[str, Any]] = []
    for want, expected_pods, what in wanted:
        job = observed.children.get(("Job", want["metadata"]["name"]))
        if stale(job, want):
            builder.waiting_for("SpecChanged", f"the spec changed: replacing Job {want['metadata']['name']}")
            return desired, [job], "Replacing"
        desired.append(want)
        state = job_status(builder, job, observed.pods, expected_pods, what, events=observed.events)
        if state != "Complete":
            return desired, [], state
    return desired, [], "Complete"

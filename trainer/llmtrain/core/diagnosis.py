"""Why a Job is stuck or failed, pinned to the pod and rank, from Job and pod status alone.

Everything here reads what the kubelet and the Job controller write: container states (exit codes,
OOMKilled, termination messages the workloads write as JSON), waiting reasons (ImagePullBackOff), the
scheduler's PodScheduled condition, the Job's own conditions, and the Job controller's FailedCreate Events
(a pod the API server refused to admit: a missing PriorityClass, an exceeded ResourceQuota).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .. import exitcodes

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
STUCK_WAITING = {
    "ImagePullBackOff": "the image cannot be pulled: check spec.image, the registry and imagePullSecrets",
    "ErrImagePull": "the image cannot be pulled: check spec.image, the registry and imagePullSecrets",
    "InvalidImageName": "the image name is invalid: fix spec.image",
    "CreateContainerConfigError": "a Secret or ConfigMap the pod needs is missing: create it",
    "CreateContainerError": "the container cannot be created",
    "CrashLoopBackOff": "the container keeps crashing",
}
#: What to change when the scheduler's message says why no node fits: (words in its message, the fix).
SCHEDULING_HINTS = (
    (
        "didn't match Pod's node affinity/selector",
        "no node has the labels spec.resources.nodeSelector and spec.pod.affinity.nodeAffinity require:"
        " fix them, or label a node",
    ),
    ("didn't match pod affinity rules", "no node runs the pods spec.pod.affinity.podAffinity asks to be near"),
    (
        "didn't match pod anti-affinity rules",
        "every node runs a pod spec.pod.affinity.podAntiAffinity keeps away from: relax it or add nodes",
    ),
    ("untolerated taint", "the nodes are tainted: add spec.resources.tolerations for their taints"),
)
#: The Priority admission plugin's refusal (plugin/pkg/admission/priority): the PriorityClass is missing.
MISSING_PRIORITY_CLASS = re.compile(r"no PriorityClass with name (\S+) was found")


@dataclass(frozen=True)
class Finding:
    """A diagnosis: a CamelCase reason, a message with the fix, and where it happened."""

    reason: str
    message: str
    pod: str | None = None
    rank: int | None = None
    exit_code: int | None = None
    permanent: bool = False

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "message": self.message[:32768]}
        if self.pod:
            out["pod"] = self.pod
        if self.rank is not None:
            out["rank"] = self.rank
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        return out


def rank(pod: dict[str, Any]) -> int | None:
    value = (pod.get("metadata", {}).get("annotations") or {}).get(INDEX_ANNOTATION)
    return int(value) if value is not None and str(value).isdigit() else None


def termination_report(state: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON the workload wrote to its termination log, when it did."""
    message = (state or {}).get("message")
    if not message:
        return None
    try:
        report = json.loads(message)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        state = status.get("state", {}).get("terminated") or status.get("lastState", {}).get("terminated")
        if state:
            return state
    return None


def exit_finding(pod: dict[str, Any], state: dict[str, Any]) -> Finding:
    """Classify one terminated container: exit-code class, OOMKilled, the workload's own error."""
    name = pod["metadata"]["name"]
    code = state.get("exitCode")
    report = termination_report(state) or {}
    detail = report.get("error") or (state.get("message") or "").strip()[-2000:]
    where = f"pod {name}" + (f" (rank {rank(pod)})" if rank(pod) is not None else "")
    if state.get("reason") == "OOMKilled":
        reason, message = (
            "OOMKilled",
            (
                f"{where} was killed for exceeding its memory limit: raise spec.resources.memory, or lower"
                f" microBatchSize / enable activationCheckpointing"
            ),
        )
    elif code == exitcodes.BAD_INPUT:
        reason, message = "BadInput", f"{where} refused its input (exit 2): {detail}"
    elif code == exitcodes.DIVERGED:
        reason, message = "NonFiniteLoss", f"{where}: training diverged (exit 3): {detail}"
    elif code == exitcodes.RETRYABLE:
        reason, message = "Interrupted", f"{where} stopped after a checkpoint (exit 75): {detail or 'SIGTERM'}"
    elif code == 137:
        reason, message = (
            "Killed",
            f"{where} was killed (SIGKILL, exit 137): node memory pressure, eviction or a lost node",
        )
    elif code == 143:
        reason, message = "Terminated", f"{where} was terminated (SIGTERM, exit 143) before it could checkpoint"
    else:
        reason, message = "Error", f"{where} failed with exit code {code}" + (f": {detail}" if detail else "")
    if "CUDA" in detail and ("no CUDA" in detail or "not available" in detail):
        reason = "NoGPU"
        message = (
            f"{where} found no usable GPU although GPUs were requested: check the node's device plugin,"
            f" driver and runtimeClass ({detail})"
        )
    permanent = code in (exitcodes.BAD_INPUT, exitcodes.DIVERGED)
    return Finding(reason, message, name, rank(pod), code, permanent)


#: Failures that usually follow another pod's (torchrun peers stopping): reported only when alone.
CONSEQUENCES = ("Terminated", "Interrupted")


def failed_pod(pods: list[dict[str, Any]]) -> Finding | None:
    """The failure that explains the others: permanent exit codes first, then causes (OOM, errors,
    kills) before consequences (SIGTERM), then the earliest finish."""
    findings: list[tuple[int, str, Finding]] = []
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Failed":
            continue
        state = _terminated(pod)
        if state is None:
            reason = pod.get("status", {}).get("reason") or "Failed"
            message = pod.get("status", {}).get("message") or "the pod failed"
            finding = Finding(reason, f"pod {pod['metadata']['name']}: {message}", pod["metadata"]["name"], rank(pod))
            findings.append((1, "", finding))
            continue
        finding = exit_finding(pod, state)
        rank_ = 0 if finding.permanent else (2 if finding.reason in CONSEQUENCES else 1)
        findings.append((rank_, state.get("finishedAt") or "", finding))
    if not findings:
        return None
    return sorted(findings, key=lambda item: (item[0], item[1]))[0][2]


def waiting(pods: list[dict[str, Any]], gpu_resource: str | None = None) -> Finding | None:
    """Why pods are not running yet: unschedulable (the scheduler's words) or a stuck container."""
    for pod in pods:
        status = pod.get("status", {})
        if status.get("phase") not in (None, "Pending"):
            continue
        name = pod["metadata"]["name"]
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                said = cond.get("message") or ""
                message = f"pod {name} cannot be scheduled: {said or cond.get('reason')}"
                if gpu_resource and gpu_resource in said:
                    message += f" (no node has enough free {gpu_resource}; lower gpusPerNode or add nodes)"
                message += "".join(f" ({fix})" for words, fix in SCHEDULING_HINTS if words in said)
                return Finding("Unschedulable", message, name, rank(pod))
        for cs in status.get("containerStatuses") or []:
            wait = cs.get("state", {}).get("waiting") or {}
            if wait.get("reason") in STUCK_WAITING:
                hint = STUCK_WAITING[wait["reason"]]
                detail = f" ({wait['message']})" if wait.get("message") else ""
                return Finding(wait["reason"], f"pod {name}: {hint}{detail}", name, rank(pod))
    return None


def job_condition(job: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in (job or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def job_failure(job: dict[str, Any], pods: list[dict[str, Any]], max_restarts: int | None = None) -> Finding:
    """Why a Job failed: the Job's reason, refined by the failing pod."""
    cond = job_condition(job, "Failed") or {}
    pod = failed_pod(pods)
    reason = cond.get("reason") or "Failed"
    if reason == "DeadlineExceeded":
        deadline = job.get("spec", {}).get("activeDeadlineSeconds")
        return Finding("DeadlineExceeded", f"ran longer than activeDeadlineSeconds ({deadline} s)")
    if reason == "BackoffLimitExceeded":
        limit = f" (spec.maxRestarts {max_restarts})" if max_restarts is not None else ""
        last = f"; last failure: {pod.message}" if pod else ""
        return Finding(
            "RestartsExhausted",
            f"retryable failures exceeded the restart budget{limit}{last}",
            pod.pod if pod else None,
            pod.rank if pod else None,
            pod.exit_code if pod else None,
        )
    if pod is not None:
        return pod
    return Finding(reason, cond.get("message") or "the Job failed")


def _event_time(event: dict[str, Any]) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _failed_creates(job: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The FailedCreate Events about this Job (not an earlier Job of the same name)."""
    meta = job["metadata"]
    return [
        event
        for event in events
        if event.get("reason") == "FailedCreate"
        and (event.get("involvedObject") or {}).get("kind") == "Job"
        and event["involvedObject"].get("name") == meta["name"]
        and event["involvedObject"].get("uid") in (None, meta.get("uid"))
    ]


def creation_failure(
    job: dict[str, Any], events: list[dict[str, Any]], pods: list[dict[str, Any]] | None = None
) -> Finding | None:
    """Why the Job controller cannot create the Job's pods: the API server's refusal its newest FailedCreate
    Event carries; none when one of `pods` (the Job's) was created after it (creating pods works again)."""
    mine = _failed_creates(job, events)
    newest = max(mine, key=_event_time) if mine else None
    if newest is None or any(
        (p.get("metadata") or {}).get("creationTimestamp", "") > _event_time(newest) for p in pods or []
    ):
        return None
    said = (newest.get("message") or "").strip()
    where = f"the Job controller cannot create the pods of Job {job['metadata']['name']}"
    missing = MISSING_PRIORITY_CLASS.search(said)
    if missing:
        return Finding(
            "PriorityClassNotFound",
            f"{where}: PriorityClass {missing.group(1)} (spec.pod.priorityClassName) does not exist: create it"
            " (kubectl get priorityclasses lists those that do) or fix spec.pod.priorityClassName",
        )
    if "exceeded quota" in said:
        return Finding(
            "QuotaExceeded", f"{where}: {said} (raise the namespace's ResourceQuota or ask for less per pod)"
        )
    return Finding("FailedCreate", f"{where}: {said}")

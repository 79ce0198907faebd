"""Kubernetes' Job controller, for llmtrain's Jobs, over the local kubelet (`kubelet.py`).

It reads Jobs from a `Store`, creates their pods (Indexed: one per completion index, with the
`batch.kubernetes.io/job-completion-index` annotation and the `<job>-<index>` hostname), has the kubelet
run each as a process, and writes Job status as the Job controller would: `podFailurePolicy`,
`backoffLimit`, `suspend`, `activeDeadlineSeconds`, completed indexes. The local runner uses it with a
`FileStore`; the emulated-cluster tests use it against the emulated API server (on the real control plane
the real Job controller does this, and the node agent runs the same kubelet).

What it does not emulate: scheduling and resource limits (every pod runs at once, unconfined), and
networking (the rendezvous address is 127.0.0.1 and each Job gets a free port).
"""

from __future__ import annotations

import logging
import random
import socket
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..control.store import Conflict, NotFound, Store
from ..core import naming
from ..core.diagnosis import INDEX_ANNOTATION
from .kubelet import CONTAINER_ENV, Kubelet, Process, expand
from .kubelet import now as _now

__all__ = ["CONTAINER_ENV", "Executor", "expand", "free_port"]
log = logging.getLogger("llmtrain.executor")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Executor:
    def __init__(
        self,
        store: Store,
        root: Path,
        namespace: str | None = None,
        kube_api: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.store, self.root, self.namespace = store, Path(root), namespace
        self.kube_api, self.extra_env = kube_api, env or {}
        self._ports: dict[str, int] = {}  # by Job uid
        self.kubelet = Kubelet(store, root, env_hook=self._local_env, on_exit=self._exited)

    @property
    def processes(self) -> dict[str, Process]:
        return self.kubelet.processes

    # -- the loop -----------------------------------------------------------------------------------

    def sync(self) -> None:
        """One pass: reap processes, advance every Job, start pending pods, stop orphans."""
        self.kubelet.sync()
        jobs = self.store.list("Job", self.namespace, {"app.kubernetes.io/managed-by": naming.MANAGED_BY})
        live = {job["metadata"]["uid"] for job in jobs}
        for job in jobs:
            try:
                self._job(job)
            except (NotFound, Conflict):
                continue  # changed under us; the next pass sees the new state
            except Exception as exc:  # an API error: the next pass retries
                log.warning("job sync failed", extra={"job": job["metadata"]["name"], "error": str(exc)[:500]})
        for process in list(self.processes.values()):
            owner = process.pod["metadata"]["labels"].get("batch.kubernetes.io/controller-uid")
            if owner not in live:
                self.kubelet.stop(process, "Deleted")
        self.kubelet.sync()

    def running(self) -> int:
        return self.kubelet.running()

    def pid(self, pod_name: str) -> int | None:
        """The process id of a running pod (for tests that kill it)."""
        return self.kubelet.pid(pod_name)

    def shutdown(self, reason: str = "TerminationByKubelet", wait: bool = True) -> None:
        """SIGTERM every pod (as a node drain would), wait their grace periods, then SIGKILL."""
        self.kubelet.shutdown(reason, wait)

    # -- Job controller -----------------------------------------------------------------------------

    def _job(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        status = dict(job.get("status") or {})
        conditions = [dict(c) for c in status.get("conditions") or []]
        finished = any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
        job_pods = self.store.list("Pod", meta["namespace"], {"batch.kubernetes.io/controller-uid": meta["uid"]})
        active = [p for p in job_pods if p.get("status", {}).get("phase") in (None, "Pending", "Running")]
        for pod in [p for p in active if p["metadata"]["uid"] not in self.processes]:
            # a pod no process of ours runs: its node (a previous runner) is gone, as after a node loss
            self.kubelet.fail(pod, 137, "the node running this pod went away", "NodeLost")
            pod["status"] = {"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True"}]}
        active = [p for p in active if p["metadata"]["uid"] in self.processes]
        if finished:
            self._stop_pods(active, "JobFinished")
            return
        now = _now()
        if spec.get("suspend"):
            self._stop_pods(active, "JobSuspended")
            _condition(conditions, "Suspended", "True", "JobSuspended", "Job suspended", now)
            self._write_job(job, status, conditions, job_pods, active, startTime=None)
            return
        if any(c["type"] == "Suspended" and c["status"] == "True" for c in conditions):
            _condition(conditions, "Suspended", "False", "JobResumed", "Job resumed", now)
            status.pop("startTime", None)
        start = status.get("startTime") or now
        failure = self._failure(job, job_pods, start)
        if failure is not None:
            reason, message = failure
            self._stop_pods(active, "JobFailed")
            _condition(conditions, "FailureTarget", "True", reason, message, now)
            _condition(conditions, "Failed", "True", reason, message, now)
            self._write_job(job, status, conditions, job_pods, [], startTime=start, completionTime=None)
            return
        completions = int(spec.get("completions") or 1)
        done = {_index(p) for p in job_pods if p.get("status", {}).get("phase") == "Succeeded"}
        busy = {_index(p) for p in active}
        for index in range(completions):
            if index not in done and index not in busy:
                created = self._create_pod(job, index)
                job_pods.append(created)
                active.append(created)
        if len(done) >= completions:
            _condition(
                conditions,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            )
            _condition(
                conditions, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", now
            )
            self._write_job(job, status, conditions, job_pods, active, startTime=start, completionTime=now)
            return
        self._write_job(job, status, conditions, job_pods, active, startTime=start)

    def _failure(self, job: dict[str, Any], job_pods: list[dict[str, Any]], start: str) -> tuple[str, str] | None:
        """podFailurePolicy (FailJob / Ignore rules), backoffLimit, activeDeadlineSeconds."""
        spec = job["spec"]
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and _age(start) > deadline:
            return "DeadlineExceeded", "Job was active longer than specified deadline"
        counted = 0
        rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
        for pod in job_pods:
            if pod.get("status", {}).get("phase") != "Failed":
                continue
            verdict = _policy(rules, pod)
            if verdict == "FailJob":
                code = _exit_code(pod)
                return "PodFailurePolicy", (
                    f"Container {_container_name(pod)} for pod {pod['metadata']['namespace']}/"
                    f"{pod['metadata']['name']} failed with exit code {code} matching FailJob rule at index 0"
                )
            if verdict != "Ignore":
                counted += 1
        if counted > int(spec.get("backoffLimit", 6)):
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        return None

    def _write_job(self, job, status, conditions, job_pods, active, **times: str | None) -> None:
        rules = (job["spec"].get("podFailurePolicy") or {}).get("rules") or []
        failed = [p for p in job_pods if p.get("status", {}).get("phase") == "Failed" and _policy(rules, p) != "Ignore"]
        succeeded = sorted({_index(p) for p in job_pods if p.get("status", {}).get("phase") == "Succeeded"})
        new = {
            **status,
            "active": len(active),
            "ready": sum(1 for p in active if p.get("status", {}).get("phase") == "Running"),
            "succeeded": len(succeeded),
            "failed": len(failed),
            "conditions": conditions,
        }
        if succeeded:
            new["completedIndexes"] = ",".join(map(str, succeeded))
        for key, value in times.items():
            if value is None:
                new.pop(key, None)
            else:
                new[key] = value
        if new != (job.get("status") or {}):
            patch = {k: v for k, v in new.items()}
            patch.update({k: None for k in job.get("status") or {} if k not in new})
            self.store.patch_status("Job", job["metadata"]["namespace"], job["metadata"]["name"], patch)

    def _create_pod(self, job: dict[str, Any], index: int) -> dict[str, Any]:
        meta, template = job["metadata"], job["spec"]["template"]
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            "batch.kubernetes.io/job-name": meta["name"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "batch.kubernetes.io/job-completion-index": str(index),
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{index}-{suffix}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {INDEX_ANNOTATION: str(index)},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template["spec"], "hostname": f"{meta['name']}-{index}"},
        }
        created = self.store.create(pod)
        created["status"] = {"phase": "Pending"}
        self.kubelet.start(created)  # a status write that fails is retried by the next pass, never lost
        return created

    def _stop_pods(self, active: list[dict[str, Any]], reason: str) -> None:
        for pod in active:
            process = self.processes.get(pod["metadata"]["uid"])
            if process is not None:
                self.kubelet.stop(process, reason)
            else:  # created but never started (e.g. by an executor that is gone)
                self.kubelet.fail(pod, 137, "", reason)

    # -- the kubelet's environment on one machine --------------------------------------------------

    def _local_env(self, pod: dict[str, Any], env: dict[str, str]) -> None:
        """One machine, one network: rendezvous on 127.0.0.1 and a free port per Job, no fixed metrics port;
        progress through the store's sink; the API server the shell names."""
        job_uid = pod["metadata"]["labels"].get("batch.kubernetes.io/controller-uid", "")
        if "LLMTRAIN_MASTER_ADDR" in env:
            env["LLMTRAIN_MASTER_ADDR"] = "127.0.0.1"
            env["LLMTRAIN_MASTER_PORT"] = str(self._ports.setdefault(job_uid, free_port()))
        uri = env.get("LLMTRAIN_PROGRESS_URI", "")
        if uri.startswith("configmap://"):
            namespace, _, name = uri[len("configmap://") :].partition("/")
            env["LLMTRAIN_PROGRESS_URI"] = self.store.progress_sink(namespace, name) or uri
        if "LLMTRAIN_METRICS_PORT" in env:
            env["LLMTRAIN_METRICS_PORT"] = ""  # many pods on one machine: no fixed port
        if self.kube_api:
            env["LLMTRAIN_KUBE_API"] = self.kube_api
        env.update(self.extra_env)

    def _exited(self, process: Process) -> None:
        if process.exit_code != 0:  # the replacement rendezvous on a fresh port: the dead one's sockets
            job_uid = process.pod["metadata"]["labels"].get("batch.kubernetes.io/controller-uid")
            self._ports.pop(job_uid, None)  # may linger (pods share one network here)


def _index(pod: dict[str, Any]) -> int:
    return int((pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION, 0))


def _exit_code(pod: dict[str, Any]) -> int | None:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        terminated = cs.get("state", {}).get("terminated")
        if terminated:
            return terminated.get("exitCode")
    return None


def _container_name(pod: dict[str, Any]) -> str:
    return pod["spec"]["containers"][0]["name"]


def _policy(rules: list[dict[str, Any]], pod: dict[str, Any]) -> str:
    """The first podFailurePolicy rule matching a failed pod: FailJob, Ignore, Count (the default)."""
    code = _exit_code(pod)
    conditions = {c["type"] for c in pod.get("status", {}).get("conditions") or [] if c.get("status") == "True"}
    for rule in rules:
        on_codes = rule.get("onExitCodes")
        if on_codes and code is not None:
            inside = code in on_codes.get("values", [])
            if inside == (on_codes.get("operator", "In") == "In"):
                return rule["action"]
        for cond in rule.get("onPodConditions") or []:
            if cond.get("type") in conditions:
                return rule["action"]
    return "Count"


def _condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str, now: str) -> None:
    for cond in conditions:
        if cond["type"] == type_:
            if cond["status"] != status:
                cond.update(status=status, reason=reason, message=message, lastTransitionTime=now)
            return
    conditions.append(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "lastProbeTime": now,
        }
    )


def _age(timestamp: str) -> float:
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - moment).total_seconds()

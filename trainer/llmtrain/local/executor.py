"""Kubernetes' Job controller and kubelet, for llmtrain's Jobs: each pod becomes a local process.

It reads Jobs from a `Store`, creates their pods (Indexed: one per completion index, with the
`batch.kubernetes.io/job-completion-index` annotation and the `<job>-<index>` hostname), starts each
pod's container as a process (env with fieldRefs and Secrets resolved, `$(VAR)` expanded, volume mount
paths mapped into a per-pod folder), and writes pod and Job status as the kubelet and the Job controller
would: exit codes, termination messages, `podFailurePolicy`, `backoffLimit`, `suspend`,
`activeDeadlineSeconds`, completed indexes. The local runner uses it with a `FileStore`; the integration
tests use it against the emulated API server.

What it does not emulate: scheduling and resource limits (every pod runs at once, unconfined), and
networking (the rendezvous address is 127.0.0.1 and each Job gets a free port).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..control.store import Conflict, NotFound, Store
from ..core import naming, pods
from ..core.diagnosis import INDEX_ANNOTATION

log = logging.getLogger("llmtrain.executor")
TERMINATION_LIMIT = 4096
#: Set in every pod process's environment to the pod's uid: how the executor finds all of a pod's processes.
CONTAINER_ENV = "LLMTRAIN_LOCAL_POD_UID"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env values (unknown names stay as written)."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass
class Process:
    pod: dict[str, Any]
    popen: subprocess.Popen
    directory: Path
    termination_log: Path
    log_path: Path
    grace: float
    started: str
    stop_requested: float | None = None
    disruption: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None  # set once the process ended; the pod status may still need writing
    message: str = ""
    running_status: dict[str, Any] | None = None  # the Running status, until it is written


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
        self.processes: dict[str, Process] = {}  # by pod uid
        self._ports: dict[str, int] = {}  # by Job uid
        self.bin_dir = Path(sys.executable).parent

    # -- the loop -----------------------------------------------------------------------------------

    def sync(self) -> None:
        """One pass: reap processes, advance every Job, start pending pods, stop orphans."""
        self._reap()
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
            if owner not in live and process.stop_requested is None:
                self._stop(process, "Deleted")
        self._reap()

    def running(self) -> int:
        return len(self.processes)

    def shutdown(self, reason: str = "TerminationByKubelet", wait: bool = True) -> None:
        """SIGTERM every pod (as a node drain would), wait their grace periods, then SIGKILL."""
        for process in self.processes.values():
            if process.stop_requested is None:
                self._stop(process, reason)
        while wait and self.processes:
            self._reap()
            time.sleep(0.2)

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
            self._finish_pod(pod, 137, "Error", "the node running this pod went away", "NodeLost")
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
        self._start(created, job)  # a status write that fails is retried by the next pass, never lost
        return created

    def _stop_pods(self, active: list[dict[str, Any]], reason: str) -> None:
        for pod in active:
            process = self.processes.get(pod["metadata"]["uid"])
            if process is not None and process.stop_requested is None:
                self._stop(process, reason)
            elif process is None:  # created but never started (e.g. by an executor that is gone)
                self._finish_pod(pod, 137, reason="Error", message="", disruption=reason)

    # -- kubelet ------------------------------------------------------------------------------------

    def _start(self, pod: dict[str, Any], job: dict[str, Any]) -> None:
        meta = pod["metadata"]
        directory = self.root / "pods" / meta["namespace"] / meta["name"]
        if directory.exists():
            shutil.rmtree(directory)
        (directory / "volumes").mkdir(parents=True)
        container = pod["spec"]["containers"][0]
        paths = self._volumes(pod, directory)
        env = self._environment(pod, container, job, paths)
        termination = Path(
            paths.get(container.get("terminationMessagePath", pods.TERMINATION_LOG)) or directory / "termination-log"
        )
        command = [expand(_translate(c, paths), env) for c in container.get("command") or []]
        args = [expand(_translate(a, paths), env) for a in container.get("args") or []]
        argv = command + args
        if argv and "/" not in argv[0] and (self.bin_dir / argv[0]).exists():
            argv[0] = str(self.bin_dir / argv[0])
        log_path = directory / "log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                cwd=directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        started = _now()
        self.processes[meta["uid"]] = Process(pod, popen, directory, termination, log_path, grace, started, env=env)
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Ready", "status": "True", "lastTransitionTime": started},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": started}},
                }
            ],
        }
        self.processes[meta["uid"]].running_status = status
        self._write_running(self.processes[meta["uid"]])
        log.info("pod started", extra={"pod": meta["name"], "pid": popen.pid})

    def _write_running(self, process: Process) -> None:
        meta = process.pod["metadata"]
        try:
            self.store.patch_status("Pod", meta["namespace"], meta["name"], process.running_status or {})
            process.running_status = None
        except NotFound:
            process.running_status = None
        except Exception as exc:  # retried by the next pass
            log.warning("pod status not written", extra={"pod": meta["name"], "error": str(exc)[:500]})

    def pid(self, pod_name: str) -> int | None:
        """The process id of a running pod (for tests that kill it)."""
        for process in self.processes.values():
            if process.pod["metadata"]["name"] == pod_name:
                return process.popen.pid
        return None

    def _volumes(self, pod: dict[str, Any], directory: Path) -> dict[str, str]:
        """Materialize volumes; returns container paths -> host paths (mount points and their roots)."""
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        by_name = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        paths: dict[str, str] = {
            pods.PVC_ROOT: str(self.root / "volumes"),
            pods.SECRETS_DIR: str(directory / "secrets"),
            container.get("terminationMessagePath", pods.TERMINATION_LOG): str(directory / "termination-log"),
        }
        for mount in container.get("volumeMounts") or []:
            volume, target = by_name[mount["name"]], mount["mountPath"]
            if "emptyDir" in volume:
                if target == "/dev/shm":
                    continue
                host = directory / "volumes" / mount["name"]
                host.mkdir(parents=True, exist_ok=True)
            elif "configMap" in volume:
                host = directory / "volumes" / mount["name"]
                host.mkdir(parents=True, exist_ok=True)
                found = self.store.get("ConfigMap", meta["namespace"], volume["configMap"]["name"]) or {}
                for key, value in (found.get("data") or {}).items():
                    (host / key).write_text(value)
            elif "secret" in volume:
                host = directory / "secrets" / volume["secret"]["secretName"]
                host.mkdir(parents=True, exist_ok=True)
                host.chmod(0o700)
                for key, value in _secret_data(self.store, meta["namespace"], volume["secret"]["secretName"]).items():
                    (host / key).write_bytes(value)
                    (host / key).chmod(0o400)
            elif "persistentVolumeClaim" in volume:
                host = self.root / "volumes" / volume["persistentVolumeClaim"]["claimName"]
                host.mkdir(parents=True, exist_ok=True)
            else:
                continue
            paths[target] = str(host)
        return paths

    def _environment(self, pod, container, job, paths: dict[str, str]) -> dict[str, str]:
        meta = pod["metadata"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                data = _secret_data(self.store, meta["namespace"], source["secretRef"]["name"])
                env.update({k: v.decode() for k, v in data.items()})
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = expand(_translate(item["value"], paths), env)
            elif "fieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = _field(pod, item["valueFrom"]["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = (
                    _secret_data(self.store, meta["namespace"], ref["name"]).get(ref["key"], b"").decode()
                )
        env["HOSTNAME"] = pod["spec"].get("hostname", meta["name"])
        env[CONTAINER_ENV] = meta["uid"]  # marks every process of this pod, as a container's cgroup would
        if "LLMTRAIN_MASTER_ADDR" in env:
            env["LLMTRAIN_MASTER_ADDR"] = "127.0.0.1"
            env["LLMTRAIN_MASTER_PORT"] = str(self._ports.setdefault(job["metadata"]["uid"], free_port()))
        uri = env.get("LLMTRAIN_PROGRESS_URI", "")
        if uri.startswith("configmap://"):
            namespace, _, name = uri[len("configmap://") :].partition("/")
            env["LLMTRAIN_PROGRESS_URI"] = self.store.progress_sink(namespace, name) or uri
        if "LLMTRAIN_METRICS_PORT" in env:
            env["LLMTRAIN_METRICS_PORT"] = ""  # many pods on one machine: no fixed port
        if self.kube_api:
            env["LLMTRAIN_KUBE_API"] = self.kube_api
        env.update(self.extra_env)
        return env

    def _stop(self, process: Process, reason: str) -> None:
        process.stop_requested = time.monotonic()
        process.disruption = reason
        with contextlib.suppress(ProcessLookupError):
            process.popen.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        for uid, process in list(self.processes.items()):
            if process.exit_code is None:
                code = process.popen.poll()
                if code is None and process.running_status is not None:
                    self._write_running(process)
                if code is None:
                    if process.stop_requested is not None and time.monotonic() - process.stop_requested > process.grace:
                        _kill_container(process)
                    continue
                _kill_container(process)  # whatever the container's main process left behind
                process.exit_code = code if code >= 0 else 128 - code
                if process.exit_code != 0:  # the replacement rendezvous on a fresh port: the dead one's
                    job_uid = process.pod["metadata"]["labels"].get("batch.kubernetes.io/controller-uid")
                    self._ports.pop(job_uid, None)  # sockets may linger (pods share one network here)
                process.message = self._termination_message(process)
            reason = "Completed" if process.exit_code == 0 else "Error"
            try:
                self._finish_pod(
                    process.pod, process.exit_code, reason, process.message, process.disruption, process.started
                )
            except NotFound:
                pass  # the pod is gone (its Job was deleted)
            except Exception as exc:  # a conflict or an API error: keep the result and write it next pass
                log.warning(
                    "pod status not written", extra={"pod": process.pod["metadata"]["name"], "error": str(exc)[:500]}
                )
                continue
            del self.processes[uid]
            log.info("pod finished", extra={"pod": process.pod["metadata"]["name"], "exitCode": process.exit_code})

    @staticmethod
    def _termination_message(process: Process) -> str:
        if process.termination_log.exists():
            return process.termination_log.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
        if process.exit_code != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            lines = process.log_path.read_bytes().decode(errors="replace").splitlines()[-80:]
            return "\n".join(lines)[-2048:]
        return ""

    def _finish_pod(
        self, pod, exit_code: int, reason: str, message: str, disruption: str | None, started: str | None = None
    ) -> None:
        now = _now()
        conditions = [{"type": "Ready", "status": "False", "lastTransitionTime": now}]
        if disruption and exit_code != 0:
            conditions.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": disruption,
                    "lastTransitionTime": now,
                }
            )
        container = pod["spec"]["containers"][0]
        terminated = {"exitCode": exit_code, "reason": reason, "finishedAt": now, "startedAt": started or now}
        if message:
            terminated["message"] = message
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"terminated": terminated},
                }
            ],
        }
        self.store.patch_status("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], status)


def _kill_container(process: Process) -> None:
    """SIGKILL every process of the pod, as a container runtime kills its cgroup: the main process's group
    and every process carrying the pod's mark, wherever it was reparented (torchrun starts each worker in
    a session of its own, so a worker outlives its group and would train on beside its replacement)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.popen.pid, signal.SIGKILL)
    for pid in _marked_processes(f"{CONTAINER_ENV}={process.pod['metadata']['uid']}".encode()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _marked_processes(mark: bytes) -> list[int]:
    """Processes whose environment holds `mark` (an entry of /proc/PID/environ)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if mark in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _translate(value: str, paths: dict[str, str]) -> str:
    """Map container paths (mount points and their roots) inside a value to host paths."""
    for target in sorted(paths, key=len, reverse=True):
        for prefix in ("", "="):
            needle = prefix + target
            index = value.find(needle)
            if index == -1:
                continue
            end = index + len(needle)
            if end == len(value) or value[end] == "/":
                if prefix == "" and index != 0:
                    continue
                return value[:index] + prefix + paths[target] + value[end:]
    return value


def _field(pod: dict[str, Any], path: str) -> str:
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": "localhost",
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    return str(simple.get(path, ""))


def _secret_data(store: Store, namespace: str, name: str) -> dict[str, bytes]:
    secret = store.get("Secret", namespace, name)
    if secret is None:
        raise NotFound(f"Secret {name} not found")
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


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

"""The kubelet, for pods that run as local processes: one way to run a pod, used by two shells.

`Kubelet` takes pods that are already bound to it and runs each pod's container as a process: volumes
materialized (emptyDir, ConfigMap, Secret, PVC directories, downward API, projected sources including the
ServiceAccount token from a hook), the environment resolved (value, fieldRef, secretKeyRef,
configMapKeyRef, envFrom, `$(VAR)` expansion), status written as a kubelet writes it (Running with
conditions, terminated with exit code, reason and the termination message, restarts under `Always` and
`OnFailure` with back-off, `activeDeadlineSeconds`, HTTP liveness and readiness probes), stops with the
grace period (SIGTERM, then SIGKILL of every process of the pod).

Where the container's paths live is the `Launcher`'s business. `TranslatingLauncher` (the default,
unprivileged: the local runner, the emulated-cluster tests) rewrites container paths in command, args and
env values to per-pod folders; the real-cluster tests' node agent brings a launcher that mounts each
volume at its own path in a private mount namespace. The Job controller half lives in `executor.py`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ..control.store import NotFound, Store
from ..core import pods

log = logging.getLogger("llmtrain.kubelet")
TERMINATION_LIMIT = 4096
#: Set in every pod process's environment to the pod's uid: how the kubelet finds all of a pod's processes.
CONTAINER_ENV = "LLMTRAIN_LOCAL_POD_UID"
BACKOFF_CAP = 300.0
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in command, args and env values (unknown names stay as written)."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass(frozen=True)
class Mount:
    """A volume mount: the container's path and the host path that backs it."""

    target: str
    host: Path
    read_only: bool = False
    memory: bool = False  # emptyDir medium Memory (a tmpfs where the launcher can make one)


@dataclass
class Process:
    """One pod's container and what the kubelet knows about it."""

    pod: dict[str, Any]
    directory: Path
    mounts: list[Mount]
    env: dict[str, str]
    argv: list[str]
    popen: subprocess.Popen | None = None
    started: str = ""
    started_at: float = 0.0
    pod_started: str = field(default_factory=now)
    pod_started_at: float = field(default_factory=time.monotonic)
    stop_requested: float | None = None
    grace: float = 30.0
    disruption: str | None = None
    reason: str | None = None  # the pod-level reason, e.g. DeadlineExceeded
    exit_code: int | None = None  # the container's exit, once it ended
    message: str = ""
    restarts: int = 0
    last_state: dict[str, Any] | None = None
    restart_at: float | None = None  # waiting in back-off until then
    ready: bool = False
    probes: dict[str, Any] = field(default_factory=dict)
    final: bool = False  # no restart follows: the pod's phase is terminal
    written: dict[str, Any] | None = None
    ip: str = "127.0.0.1"

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def container(self) -> dict[str, Any]:
        return self.pod["spec"]["containers"][0]

    @property
    def log_path(self) -> Path:
        return self.directory / "log"

    @property
    def termination_log(self) -> Path:
        return self.directory / "termination-log"


class Launcher(Protocol):
    """Starts a pod's container process."""

    def command(self, process: Process) -> list[str]:
        """The container's argv before `$(VAR)` expansion: command + args, or the image's defaults."""

    def translate(self, value: str, process: Process) -> str:
        """A container path inside `value`, as the process will see it."""

    def launch(self, process: Process, argv: list[str], env: dict[str, str], log_file: Any) -> subprocess.Popen:
        """Start the process; it must carry `env` (with the pod's mark) and put its output in `log_file`."""


class TranslatingLauncher:
    """Unprivileged: the host's filesystem, container paths rewritten to the pod's folders (the roots of the
    workload contract too: `$LLMTRAIN_PVC_ROOT`, `$LLMTRAIN_SECRETS_DIR`, the termination log)."""

    def __init__(self, volumes_root: Path) -> None:
        self.volumes_root = Path(volumes_root)
        self.bin_dir = Path(sys.executable).parent

    def paths(self, process: Process) -> dict[str, str]:
        termination = process.container.get("terminationMessagePath", pods.TERMINATION_LOG)
        out = {
            pods.PVC_ROOT: str(self.volumes_root),
            pods.SECRETS_DIR: str(process.directory / "secrets"),
            termination: str(process.termination_log),
        }
        out.update({m.target: str(m.host) for m in process.mounts})
        return out

    def command(self, process: Process) -> list[str]:
        container = process.container
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if argv and "/" not in argv[0] and (self.bin_dir / argv[0]).exists():
            argv[0] = str(self.bin_dir / argv[0])
        return argv

    def translate(self, value: str, process: Process) -> str:
        return translate(value, self.paths(process))

    def launch(self, process: Process, argv: list[str], env: dict[str, str], log_file: Any) -> subprocess.Popen:
        return subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=process.directory,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


class Kubelet:
    """Runs bound pods as processes and writes their status (call `sync()` often)."""

    def __init__(
        self,
        store: Store,
        root: Path,
        node_name: str = "localhost",
        launcher: Launcher | None = None,
        pvc_path: Callable[[str, str], Path] | None = None,
        env_hook: Callable[[dict[str, Any], dict[str, str]], None] | None = None,
        token: Callable[[dict[str, Any], dict[str, Any]], str] | None = None,
        on_exit: Callable[[Process], None] | None = None,
        backoff: float = 10.0,
        pod_ip: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.store, self.root, self.node_name = store, Path(root), node_name
        self.launcher = launcher or TranslatingLauncher(self.root / "volumes")
        self.pvc_path = pvc_path or (lambda namespace, claim: self.root / "volumes" / claim)
        self.env_hook, self.token, self.on_exit = env_hook, token, on_exit
        self.backoff = backoff
        self.pod_ip = pod_ip or (lambda pod: "127.0.0.1")
        self.processes: dict[str, Process] = {}  # by pod uid
        self._probes = ThreadPoolExecutor(4, thread_name_prefix="probe")

    # -- the API the shells use ----------------------------------------------------------------------

    def start(self, pod: dict[str, Any]) -> Process:
        """Materialize the pod's volumes and environment and start its container (status: Running)."""
        meta = pod["metadata"]
        directory = self.root / "pods" / meta["namespace"] / meta["name"]
        if directory.exists():
            shutil.rmtree(directory)
        (directory / "volumes").mkdir(parents=True)
        process = Process(pod, directory, [], {}, [])
        process.grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        process.ip = self.pod_ip(pod)
        self.processes[meta["uid"]] = process
        try:
            process.mounts = self._volumes(process)
            process.env = self._environment(process)
            argv = self.launcher.command(process)
            process.argv = [expand(self.launcher.translate(a, process), process.env) for a in argv]
            self._run(process)
        except Exception as exc:  # a missing ConfigMap/Secret, an unknown image: the pod cannot start
            process.exit_code, process.final = 128, True
            process.message = f"CreateContainerConfigError: {exc}"[:TERMINATION_LIMIT]
            process.reason = "CreateContainerConfigError"
            log.warning("pod %s not started: %s", meta["name"], str(exc)[:500])
        self._write(process)
        return process

    def stop(self, process: Process, reason: str, grace: float | None = None) -> None:
        """SIGTERM the container; SIGKILL every process of the pod once the grace period has passed."""
        if process.stop_requested is not None:
            return
        process.stop_requested = time.monotonic()
        process.disruption = reason
        if grace is not None:
            process.grace = grace
        if process.popen is None or process.exit_code is not None:
            process.final = True
            if process.exit_code is None:
                process.exit_code = 137
            return
        with contextlib.suppress(ProcessLookupError):
            process.popen.send_signal(signal.SIGTERM)

    def sync(self) -> list[Process]:
        """Reap, restart, probe, enforce deadlines, write status. Returns the pods that reached a terminal
        phase and whose status is written (they are forgotten)."""
        done = []
        for uid, process in list(self.processes.items()):
            self._deadline(process)
            self._reap(process)
            self._restart(process)
            self._probe(process)
            self._write(process)
            if process.final and process.written is not None and process.written.get("phase") in TERMINAL:
                del self.processes[uid]
                done.append(process)
                log.info("pod finished", extra={"pod": process.name, "exitCode": process.exit_code})
        return done

    def running(self) -> int:
        return len(self.processes)

    def pid(self, pod_name: str) -> int | None:
        """The process id of a running pod's container (for tests that kill it)."""
        for process in self.processes.values():
            if process.name == pod_name and process.popen is not None and process.exit_code is None:
                return process.popen.pid
        return None

    def shutdown(self, reason: str = "TerminationByKubelet", wait: bool = True) -> None:
        """SIGTERM every pod (as a node drain would), wait their grace periods, then SIGKILL."""
        for process in self.processes.values():
            self.stop(process, reason)
        while wait and self.processes:
            self.sync()
            time.sleep(0.2)
        self._probes.shutdown(wait=False, cancel_futures=True)

    # -- processes ------------------------------------------------------------------------------------

    def _run(self, process: Process) -> None:
        if process.log_path.exists() and process.restarts:
            process.log_path.replace(process.directory / "log.previous")
        process.termination_log.unlink(missing_ok=True)
        process.termination_log.touch()
        with process.log_path.open("ab") as out:
            process.popen = self.launcher.launch(process, process.argv, process.env, out)
        process.started, process.started_at = now(), time.monotonic()
        process.exit_code, process.message, process.ready = None, "", "readinessProbe" not in process.container
        process.probes = {}
        log.info("container started", extra={"pod": process.name, "pid": process.popen.pid})

    def _reap(self, process: Process) -> None:
        if process.popen is None or process.exit_code is not None:
            return
        code = process.popen.poll()
        if code is None:
            if process.stop_requested is not None and time.monotonic() - process.stop_requested > process.grace:
                kill_container(process.uid, process.popen.pid)
            return
        kill_container(process.uid, process.popen.pid)  # whatever the main process left behind
        process.exit_code = code if code >= 0 else 128 - code
        process.message = self._termination_message(process)
        process.ready = False
        if self.on_exit is not None:
            self.on_exit(process)
        policy = process.pod["spec"].get("restartPolicy", "Always")
        restart = policy == "Always" or (policy == "OnFailure" and process.exit_code != 0)
        if process.stop_requested is not None or not restart:
            process.final = True

    def _restart(self, process: Process) -> None:
        """Under `Always`/`OnFailure`: back off (10 s doubling to 5 min, as the kubelet), then start again."""
        if process.final or process.exit_code is None:
            return
        if process.restart_at is None:
            process.last_state = {"terminated": self._terminated(process)}
            process.restart_at = time.monotonic() + min(self.backoff * 2**process.restarts, BACKOFF_CAP)
            return
        if time.monotonic() >= process.restart_at:
            process.restarts += 1
            process.restart_at = None
            try:
                self._run(process)
            except OSError as exc:
                process.final, process.message = True, f"restart failed: {exc}"

    def _deadline(self, process: Process) -> None:
        deadline = process.pod["spec"].get("activeDeadlineSeconds")
        if deadline and process.stop_requested is None and time.monotonic() - process.pod_started_at > deadline:
            process.reason = "DeadlineExceeded"
            self.stop(process, "DeadlineExceeded")

    @staticmethod
    def _termination_message(process: Process) -> str:
        if process.termination_log.exists() and process.termination_log.stat().st_size:
            return process.termination_log.read_bytes()[:TERMINATION_LIMIT].decode(errors="replace")
        policy = process.container.get("terminationMessagePolicy", "File")
        if process.exit_code != 0 and policy == "FallbackToLogsOnError" and process.log_path.exists():
            lines = process.log_path.read_bytes().decode(errors="replace").splitlines()[-80:]
            return "\n".join(lines)[-2048:]
        return ""

    # -- probes ---------------------------------------------------------------------------------------

    def _probe(self, process: Process) -> None:
        """HTTP liveness and readiness probes, as the kubelet runs them (period, delay, thresholds)."""
        if process.exit_code is not None or process.stop_requested is not None:
            return
        for kind in ("livenessProbe", "readinessProbe"):
            spec = process.container.get(kind)
            if not spec or "httpGet" not in spec:
                continue
            state = process.probes.setdefault(kind, {"next": spec.get("initialDelaySeconds", 0), "fails": 0, "ok": 0})
            future: Future | None = state.get("future")
            if future is not None and future.done():
                state.pop("future")
                self._probe_result(process, kind, spec, state, future.result())
            age = time.monotonic() - process.started_at
            if "future" not in state and age >= state["next"]:
                state["next"] = age + spec.get("periodSeconds", 10)
                state["future"] = self._probes.submit(http_probe, process.container, spec)

    def _probe_result(self, process: Process, kind: str, spec: dict[str, Any], state: dict, ok: bool) -> None:
        if ok:
            state["fails"], state["ok"] = 0, state["ok"] + 1
        else:
            state["fails"], state["ok"] = state["fails"] + 1, 0
        if kind == "readinessProbe":
            if ok and state["ok"] >= spec.get("successThreshold", 1):
                process.ready = True
            elif not ok and state["fails"] >= spec.get("failureThreshold", 3):
                process.ready = False
        elif not ok and state["fails"] >= spec.get("failureThreshold", 3) and process.popen is not None:
            log.warning("liveness probe failed: restarting", extra={"pod": process.name})
            process.message = "Container failed liveness probe, will be restarted"
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(signal.SIGTERM)
            process.probes = {}

    # -- status ---------------------------------------------------------------------------------------

    def _write(self, process: Process) -> None:
        status = self.status(process)
        if status == process.written:
            return
        meta = process.pod["metadata"]
        try:
            self.store.patch_status("Pod", meta["namespace"], meta["name"], status)
        except NotFound:
            process.final = True
            status["phase"] = status.get("phase") if status.get("phase") in TERMINAL else "Failed"
        except Exception as exc:  # a conflict or an API error: keep the state and write it next pass
            log.warning("pod status not written", extra={"pod": meta["name"], "error": str(exc)[:500]})
            return
        process.written = status

    def fail(self, pod: dict[str, Any], exit_code: int, message: str, disruption: str | None) -> None:
        """Write a terminal status for a pod no process of ours runs (e.g. its node went away)."""
        meta = pod["metadata"]
        process = Process(pod, self.root / "pods" / meta["namespace"] / meta["name"], [], {}, [])
        process.exit_code, process.final, process.message, process.disruption = exit_code, True, message, disruption
        self.store.patch_status("Pod", meta["namespace"], meta["name"], self.status(process))

    def status(self, process: Process) -> dict[str, Any]:
        """The pod status a kubelet would report for this process's state."""
        t = now()
        container = process.container
        cs: dict[str, Any] = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "restartCount": process.restarts,
            "ready": process.ready and process.exit_code is None,
            "started": process.exit_code is None and process.popen is not None,
        }
        if process.last_state:
            cs["lastState"] = process.last_state
        if process.final:
            phase = "Succeeded" if process.exit_code == 0 else "Failed"
            cs["state"] = {"terminated": self._terminated(process)}
        elif process.exit_code is not None:
            phase = "Running"
            cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}
        else:
            phase = "Running"
            cs["state"] = {"running": {"startedAt": process.started}}
        ready = "True" if cs["ready"] else "False"
        conditions = [
            _cond("PodReadyToStartContainers", "True", process.pod_started),
            _cond("Initialized", "True", process.pod_started),
            _cond("Ready", ready, t),
            _cond("ContainersReady", ready, t),
            _cond("PodScheduled", "True", process.pod_started),
        ]
        if process.final and process.disruption and process.exit_code != 0:
            conditions.append({**_cond("DisruptionTarget", "True", t), "reason": "TerminationByKubelet"})
            conditions[-1]["message"] = process.disruption
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": process.ip,
            "podIPs": [{"ip": process.ip}],
            "startTime": process.pod_started,
            "conditions": conditions,
            "containerStatuses": [cs],
        }
        if process.reason == "DeadlineExceeded":
            message = "Pod was active on the node longer than specified deadline"
            status.update(reason="DeadlineExceeded", message=message)
        if process.written is not None:  # unchanged parts keep their transition times
            _keep_times(status, process.written)
        return status

    def _terminated(self, process: Process) -> dict[str, Any]:
        code = process.exit_code if process.exit_code is not None else 137
        reason = process.reason if process.reason == "CreateContainerConfigError" else None
        reason = reason or ("Completed" if code == 0 else "Error")
        out = {
            "exitCode": code,
            "reason": reason,
            "startedAt": process.started or process.pod_started,
            "finishedAt": now(),
            "containerID": f"local://{process.uid}/{process.restarts}",
        }
        if process.message:
            out["message"] = process.message
        return out

    # -- volumes and environment ---------------------------------------------------------------------

    def _volumes(self, process: Process) -> list[Mount]:
        """Materialize each mounted volume; returns the mounts (container path -> host path)."""
        pod, directory = process.pod, process.directory
        namespace = pod["metadata"]["namespace"]
        by_name = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = []
        for mount in process.container.get("volumeMounts") or []:
            volume, target = by_name[mount["name"]], mount["mountPath"]
            read_only = bool(mount.get("readOnly"))
            host = directory / "volumes" / mount["name"]
            if "emptyDir" in volume:
                host.mkdir(parents=True, exist_ok=True)
                memory = (volume["emptyDir"] or {}).get("medium") == "Memory"
                mounts.append(Mount(target, host, read_only, memory))
                continue
            if "persistentVolumeClaim" in volume:
                host = self.pvc_path(namespace, volume["persistentVolumeClaim"]["claimName"])
                host.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume:
                host = directory / "secrets" / volume["secret"]["secretName"]
                self._files(host, self._secret_files(namespace, volume["secret"]), volume["secret"], secret=True)
            elif "configMap" in volume:
                self._files(host, self._configmap_files(namespace, volume["configMap"]), volume["configMap"])
            elif "downwardAPI" in volume:
                self._files(host, self._downward_files(pod, volume["downwardAPI"]), volume["downwardAPI"])
            elif "projected" in volume:
                self._files(host, self._projected_files(process, volume["projected"]), volume["projected"])
            else:
                raise ValueError(f"volume {mount['name']}: this node supports no such volume type")
            if mount.get("subPath"):
                host = host / mount["subPath"]
            mounts.append(Mount(target, host, read_only))
        return mounts

    @staticmethod
    def _files(host: Path, files: dict[str, bytes], source: dict[str, Any], secret: bool = False) -> None:
        host.mkdir(parents=True, exist_ok=True)
        if secret:
            host.chmod(0o700)
        mode = source.get("defaultMode", 0o400 if secret else 0o644)
        for key, value in files.items():
            path = host / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(value)
            path.chmod(mode)

    def _secret_files(self, namespace: str, source: dict[str, Any]) -> dict[str, bytes]:
        name = source.get("secretName") or source.get("name")
        return _select(self._secret(namespace, name, source.get("optional", False)), source, "Secret", name)

    def _configmap_files(self, namespace: str, source: dict[str, Any]) -> dict[str, bytes]:
        name = source["name"]
        return _select(self._configmap(namespace, name, source.get("optional", False)), source, "ConfigMap", name)

    def _downward_files(self, pod: dict[str, Any], source: dict[str, Any]) -> dict[str, bytes]:
        out, ip = {}, self.processes[pod["metadata"]["uid"]].ip
        for item in source.get("items") or []:
            if "fieldRef" in item:
                out[item["path"]] = field_value(pod, item["fieldRef"]["fieldPath"], self.node_name, ip).encode()
        return out

    def _projected_files(self, process: Process, source: dict[str, Any]) -> dict[str, bytes]:
        namespace, out = process.pod["metadata"]["namespace"], {}
        for item in source.get("sources") or []:
            if "serviceAccountToken" in item:
                if self.token is None:
                    raise ValueError("a projected ServiceAccount token needs the TokenRequest API (no cluster here)")
                token = item["serviceAccountToken"]
                out[token["path"]] = self.token(process.pod, token).encode()
            elif "configMap" in item:
                out.update(self._configmap_files(namespace, item["configMap"]))
            elif "secret" in item:
                out.update(self._secret_files(namespace, item["secret"]))
            elif "downwardAPI" in item:
                out.update(self._downward_files(process.pod, item["downwardAPI"]))
        return out

    def _secret(self, namespace: str, name: str, optional: bool = False) -> dict[str, bytes]:
        secret = self.store.get("Secret", namespace, name)
        if secret is None:
            if optional:
                return {}
            raise NotFound(f'secret "{name}" not found')
        out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
        return out

    def _configmap(self, namespace: str, name: str, optional: bool = False) -> dict[str, bytes]:
        found = self.store.get("ConfigMap", namespace, name)
        if found is None:
            if optional:
                return {}
            raise NotFound(f'configmap "{name}" not found')
        out = {k: v.encode() for k, v in (found.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (found.get("binaryData") or {}).items()})
        return out

    def _environment(self, process: Process) -> dict[str, str]:
        pod, container = process.pod, process.container
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                ref = source["secretRef"]
                data = self._secret(namespace, ref["name"], ref.get("optional", False))
            else:
                ref = source["configMapRef"]
                data = self._configmap(namespace, ref["name"], ref.get("optional", False))
            env.update({prefix + k: v.decode(errors="replace") for k, v in data.items()})
        for item in container.get("env") or []:
            env[item["name"]] = self._env_value(process, item, env)
        env["HOSTNAME"] = pod["spec"].get("hostname", pod["metadata"]["name"])
        env[CONTAINER_ENV] = pod["metadata"]["uid"]  # marks every process of this pod, as a cgroup would
        if self.env_hook is not None:
            self.env_hook(pod, env)
        return env

    def _env_value(self, process: Process, item: dict[str, Any], env: dict[str, str]) -> str:
        namespace = process.pod["metadata"]["namespace"]
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            return field_value(process.pod, source["fieldRef"]["fieldPath"], self.node_name, process.ip)
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self._key(self._secret(namespace, ref["name"], ref.get("optional", False)), ref, "secret")
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self._key(self._configmap(namespace, ref["name"], ref.get("optional", False)), ref, "configmap")
        return expand(self.launcher.translate(item.get("value", ""), process), env)

    @staticmethod
    def _key(data: dict[str, bytes], ref: dict[str, Any], kind: str) -> str:
        if ref["key"] not in data and not ref.get("optional", False):
            raise NotFound(f'couldn\'t find key {ref["key"]} in {kind} "{ref["name"]}"')
        return data.get(ref["key"], b"").decode(errors="replace")


TERMINAL = ("Succeeded", "Failed")


def _cond(type_: str, status: str, t: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": t}


def _keep_times(status: dict[str, Any], previous: dict[str, Any]) -> None:
    """A condition whose status did not change keeps its lastTransitionTime (so unchanged status is equal)."""
    before = {c["type"]: c for c in previous.get("conditions") or []}
    for cond in status["conditions"]:
        old = before.get(cond["type"])
        if old is not None and old["status"] == cond["status"]:
            cond["lastTransitionTime"] = old["lastTransitionTime"]
    old_cs = (previous.get("containerStatuses") or [{}])[0]
    old_end = old_cs.get("state", {}).get("terminated")
    new_end = status["containerStatuses"][0]["state"].get("terminated")
    if old_end and new_end and old_end.get("containerID") == new_end.get("containerID"):
        new_end["finishedAt"] = old_end["finishedAt"]


def _select(data: dict[str, bytes], source: dict[str, Any], kind: str, name: str) -> dict[str, bytes]:
    """All keys, or the listed `items` (key -> path)."""
    items = source.get("items")
    if not items:
        return data
    out = {}
    for item in items:
        if item["key"] not in data:
            if source.get("optional", False):
                continue
            raise NotFound(f'{kind} "{name}" has no key {item["key"]}')
        out[item["path"]] = data[item["key"]]
    return out


def http_probe(container: dict[str, Any], spec: dict[str, Any]) -> bool:
    """One HTTP probe: a status in [200, 400) within timeoutSeconds is a success."""
    get = spec["httpGet"]
    port = get["port"]
    if isinstance(port, str) and not port.isdigit():
        port = next((p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port), None)
        if port is None:
            return False
    host = get.get("host") or "127.0.0.1"
    url = f"{get.get('scheme', 'HTTP').lower()}://{host}:{port}{get.get('path', '/')}"
    try:
        with urllib.request.urlopen(url, timeout=spec.get("timeoutSeconds", 1)) as response:
            return 200 <= response.status < 400
    except Exception:  # refused, timed out, 4xx/5xx
        return False


def field_value(pod: dict[str, Any], path: str, node_name: str = "localhost", ip: str = "127.0.0.1") -> str:
    """The downward API: a pod field by its fieldPath."""
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(items.items()))
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName") or node_name,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": ip,
        "status.podIPs": ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    return str(simple.get(path, ""))


def kill_container(uid: str, pid: int | None = None) -> None:
    """SIGKILL every process of the pod, as a container runtime kills its cgroup: the main process's group
    and every process carrying the pod's mark, wherever it was reparented (torchrun starts each worker in
    a session of its own, so a worker outlives its group and would train on beside its replacement)."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for found in marked_processes(f"{CONTAINER_ENV}={uid}".encode()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(found, signal.SIGKILL)


def marked_processes(mark: bytes) -> list[int]:
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


def translate(value: str, paths: dict[str, str]) -> str:
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

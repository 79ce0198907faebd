"""Where a run's metrics are: `<checkpoint uri>/metrics/metrics.jsonl`, the checkpoint URI read from the
TrainingRun (its latest checkpoint's parent, else its trainer Job's `--checkpoints`, else
`spec.checkpointing.uri`), in a cluster (through kubectl, with the caller's kubeconfig) or in the work
directory of `llmtrain run`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .. import storage
from ..core import naming
from ..errors import BadInput
from ..train.metrics_sync import JSONL, metrics_uri

LOCAL_NAMESPACE = "default"  # the namespace of `llmtrain run`


class RunNotFound(BadInput, LookupError):
    """No such TrainingRun, or one whose checkpoint URI is not known yet."""


def checkpoint_root(run: dict[str, Any], job: dict[str, Any] | None) -> str | None:
    """The run's checkpoint URI: its latest checkpoint's parent, its trainer Job's --checkpoints, or the spec's."""
    latest = ((run.get("status") or {}).get("latestCheckpoint") or {}).get("uri")
    if isinstance(latest, str) and "/" in latest.rstrip("/"):
        return latest.rstrip("/").rsplit("/", 1)[0]
    for container in (((job or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        args = [str(a) for a in container.get("args") or []]
        if "--checkpoints" in args[:-1]:
            return args[args.index("--checkpoints") + 1]
    uri = ((run.get("spec") or {}).get("checkpointing") or {}).get("uri")
    return uri if isinstance(uri, str) and "://" in uri else None  # a relative local path needs the run file's folder


def metrics_file(run: dict[str, Any], job: dict[str, Any] | None) -> str:
    """The URI of the run's metrics.jsonl."""
    root = checkpoint_root(run, job)
    if root is None:
        name = (run.get("metadata") or {}).get("name")
        raise RunNotFound(
            f"TrainingRun {name}: no checkpoint URI known yet (metrics are kept beside the checkpoints from the"
            " first one on); use --metrics with a metrics.jsonl"
        )
    return storage.join(metrics_uri(root), JSONL)


def from_workdir(workdir: Path, name: str) -> str:
    """The metrics file of a run of `llmtrain run --workdir`."""
    from ..local.filestore import FileStore

    if not (Path(workdir) / "state").is_dir():
        raise RunNotFound(f"{workdir}: not a work directory of `llmtrain run` (no state/)")
    store = FileStore(Path(workdir))
    run = store.get("TrainingRun", LOCAL_NAMESPACE, name)
    if run is None:
        raise RunNotFound(f"TrainingRun {name} is not in {workdir}")
    return metrics_file(run, store.get("Job", LOCAL_NAMESPACE, naming.train_job(name)))


def from_cluster(name: str, namespace: str | None) -> str:
    """The metrics file of a TrainingRun in the cluster kubectl points at (its current namespace unless given)."""
    run = kubectl_get("trainingrun", name, namespace)
    if run is None:
        where = f" in namespace {namespace}" if namespace else ""
        raise RunNotFound(f"TrainingRun {name} not found{where}")
    return metrics_file(run, kubectl_get("job", naming.train_job(name), namespace))


def kubectl_get(kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    """`kubectl get KIND NAME -o json` ($KUBECTL, else kubectl on the PATH); None when not found."""
    binary = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not binary:
        raise BadInput("kubectl not found (set $KUBECTL or put it on the PATH), or use --workdir or --metrics")
    command = [binary, "get", kind, name, "-o", "json", *(["-n", namespace] if namespace else [])]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise storage.StorageError(f"kubectl get {kind} {name}: {exc}", retryable=True) from None
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise storage.StorageError(f"kubectl get {kind} {name}: {result.stderr.strip()[-500:]}", retryable=True)
    return json.loads(result.stdout)

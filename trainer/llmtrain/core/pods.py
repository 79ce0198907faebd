"""The pod template pieces every workload shares: security, env contract, volumes, resources, and the pod
controls a cluster needs (`spec.pod`: env, scheduling, labels, annotations, extended resources, /dev/shm)."""

from __future__ import annotations

from typing import Any

from ..api.common import PlacedPodResources, PodControls
from ..api.trainingrun import ComputeSpec
from .context import Context

SPEC_DIR = "/etc/llmtrain"
PVC_ROOT = "/mnt/pvc"
SECRETS_DIR = "/var/run/secrets/llmtrain"
TERMINATION_LOG = "/dev/termination-log"
SCRATCH = "/scratch"  # an emptyDir: the root filesystem is read-only
UID = 1000

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "fsGroup": UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def env(ctx: Context, extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The environment contract of the workload CLIs (docs/operator.md)."""
    values = {
        "HOME": SCRATCH,
        "TMPDIR": f"{SCRATCH}/tmp",
        "PYTHONUNBUFFERED": "1",
        "LLMTRAIN_SECRETS_DIR": SECRETS_DIR,
        "LLMTRAIN_PVC_ROOT": PVC_ROOT,
        "LLMTRAIN_CACHE_DIR": f"{SCRATCH}/llmtrain-cache",
        "LLMTRAIN_TERMINATION_LOG": TERMINATION_LOG,
        **({"LLMTRAIN_S3_ENDPOINT": ctx.s3_endpoint} if ctx.s3_endpoint else {}),
        **(extra or {}),
    }
    out: list[dict[str, Any]] = [
        {"name": "POD_NAME", **_field("metadata.name")},
        {"name": "POD_NAMESPACE", **_field("metadata.namespace")},
    ]
    out += [{"name": key, "value": value} for key, value in values.items()]
    return out


def ingest_env(ctx: Context) -> dict[str, str]:
    """The operator's limits on what ingest sources may reach and how long a read may take."""
    values = {}
    if ctx.http_denied_cidrs is not None:
        values["LLMTRAIN_HTTP_DENIED_CIDRS"] = ",".join(ctx.http_denied_cidrs)
    if ctx.http_allowed_cidrs:
        values["LLMTRAIN_HTTP_ALLOWED_CIDRS"] = ",".join(ctx.http_allowed_cidrs)
    if ctx.read_deadline_seconds is not None:
        values["LLMTRAIN_READ_DEADLINE_SECONDS"] = f"{ctx.read_deadline_seconds:g}"
    return values


def resources(cpu: str | None, memory: str | None, extended: dict[str, int] | None = None) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS when both are set); accelerators and other extended resources
    as limits (Kubernetes sets their requests equal: they cannot be overcommitted)."""
    amounts: dict[str, Any] = {}
    if cpu:
        amounts["cpu"] = str(cpu)
    if memory:
        amounts["memory"] = str(memory)
    limits = {**amounts, **{k: str(v) for k, v in (extended or {}).items()}}
    out: dict[str, Any] = {}
    if amounts:
        out["requests"] = dict(amounts)
    if limits:
        out["limits"] = limits
    return out


def volumes(
    spec_configmap: str, claims: list[str], secrets: list[str], shm: bool = False, shm_size: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts): the spec, scratch, PVCs, Secrets as files, /dev/shm (with `shm`, or
    when `shm_size` limits it)."""
    vols: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": spec_configmap}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH},
    ]
    if shm or shm_size:
        memory = {"medium": "Memory", **({"sizeLimit": str(shm_size)} if shm_size else {})}
        vols.append({"name": "dshm", "emptyDir": memory})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    for index, claim in enumerate(claims):
        vols.append({"name": f"pvc-{index}", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"pvc-{index}", "mountPath": f"{PVC_ROOT}/{claim}"})
    for index, secret in enumerate(secrets):
        vols.append({"name": f"secret-{index}", "secret": {"secretName": secret, "defaultMode": 0o400}})
        mounts.append({"name": f"secret-{index}", "mountPath": f"{SECRETS_DIR}/{secret}", "readOnly": True})
    return vols, mounts


def container(
    name: str,
    ctx: Context,
    image: str | None,
    command: list[str],
    args: list[str],
    env_vars: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    resource_amounts: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "image": image or ctx.image,
        "imagePullPolicy": ctx.image_pull_policy,
        "command": command,
        "args": args,
        "env": env_vars,
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if ctx.storage_secret:
        out["envFrom"] = [{"secretRef": {"name": ctx.storage_secret, "optional": False}}]
    if resource_amounts:
        out["resources"] = resource_amounts
    return out


def pod_spec(
    containers: list[dict[str, Any]],
    vols: list[dict[str, Any]],
    grace_seconds: int = 30,
    service_account: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": vols,
        "securityContext": POD_SECURITY,
        "terminationGracePeriodSeconds": grace_seconds,
        "enableServiceLinks": False,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
        spec["automountServiceAccountToken"] = True
    else:
        spec["automountServiceAccountToken"] = False
    spec.update(extra or {})
    return spec


# --- the pod controls of spec.pod ---------------------------------------------------------------------


def user_env(controls: PodControls) -> list[dict[str, Any]]:
    """`spec.pod.env`, after the workload contract's variables (whose names the API refuses here)."""
    return [variable.to_wire() for variable in controls.env]


def extended_resources(controls: PodControls, accelerators: dict[str, int] | None = None) -> dict[str, int]:
    """The extended resources of each pod: the kind's accelerators and `spec.pod.extraResources`."""
    return {**(accelerators or {}), **controls.extra_resources}


def scheduling(controls: PodControls, placement: PlacedPodResources | ComputeSpec) -> dict[str, Any]:
    """The pod spec's scheduling fields: nodeSelector and tolerations (`placement`: spec.resources), affinity,
    priorityClassName, schedulerName and imagePullSecrets (`spec.pod`)."""
    out: dict[str, Any] = {}
    if placement.node_selector:
        out["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        out["tolerations"] = [toleration.to_wire() for toleration in placement.tolerations]
    if controls.affinity is not None:
        out["affinity"] = controls.affinity.to_wire()
    if controls.priority_class_name:
        out["priorityClassName"] = controls.priority_class_name
    if controls.scheduler_name:
        out["schedulerName"] = controls.scheduler_name
    if controls.image_pull_secrets:
        out["imagePullSecrets"] = [secret.to_wire() for secret in controls.image_pull_secrets]
    return out

"""What every kind's children are made of: object metadata with the owner reference, the spec ConfigMap
a workload reads, the Indexed Job with its failure policy and spec hash, and the named structure each kind
declares its children in (`child` fields), from which the keys the shell reads are derived."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import yaml

from .. import exitcodes
from ..api import DataSource, ModelExport, TrainingRun
from . import naming
from .context import Context
from .plan import ChildKey

JOB_INDEX = "$(JOB_COMPLETION_INDEX)"
INDEX_ENV = {
    "name": "JOB_COMPLETION_INDEX",
    "valueFrom": {"fieldRef": {"fieldPath": ("metadata.annotations['batch.kubernetes.io/job-completion-index']")}},
}


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def metadata(body: dict[str, Any], name: str, labels: dict[str, str], ctx: Context) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": {**ctx.labels, **labels},
        "ownerReferences": [naming.owner_reference(body)],
    }


#: Fields only the operator acts on: editing them never restarts a running workload.
OPERATOR_ONLY = ("suspend", "queueName", "workloadPriorityClassName", "pendingTimeoutSeconds")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"


def document(resource: DataSource | TrainingRun | ModelExport, namespace: str) -> dict[str, Any]:
    """The resource as the workload reads it (the spec ConfigMap; its hash decides Job replacement)."""
    wire = resource.to_wire()
    return {
        "apiVersion": wire["apiVersion"],
        "kind": wire["kind"],
        "metadata": {"name": resource.name, "namespace": namespace},
        "spec": {k: v for k, v in wire["spec"].items() if k not in OPERATOR_ONLY},
    }


def spec_configmap(
    body: dict[str, Any], documents: list[dict[str, Any]], labels: dict[str, str], ctx: Context
) -> dict[str, Any]:
    """The resource(s) as the pod reads them, at /etc/llmtrain/resource.yaml."""
    text = yaml.safe_dump_all(documents, sort_keys=False)
    name = naming.spec_configmap(body["kind"], body["metadata"]["name"])
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(body, name, labels, ctx),
        "data": {naming.SPEC_KEY: text},
    }


def failure_policy(container: str) -> dict[str, Any]:
    """Bad input and divergence fail the Job at once; disruptions (preemption, eviction, drain) are
    not counted; everything else (exit 75, OOM kills, NCCL timeouts, node loss) counts against backoffLimit."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": [exitcodes.BAD_INPUT, exitcodes.DIVERGED],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def job(
    body: dict[str, Any],
    name: str,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    ctx: Context,
    *,
    container: str,
    completions: int = 1,
    backoff_limit: int = 3,
    suspend: bool = False,
    active_deadline: int | None = None,
    job_labels: dict[str, str] | None = None,
    inputs: Any = None,
    pod_labels: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An Indexed Job of `completions` pods; `pod_labels` and `pod_annotations` (spec.pod's) go on the pod
    template under the operator's own labels. The spec hash covers the template and `inputs`."""
    template: dict[str, Any] = {"labels": {**(pod_labels or {}), **ctx.labels, **labels}}
    if pod_annotations:
        template["annotations"] = dict(pod_annotations)
    spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": completions,
        "completionMode": "Indexed",
        "backoffLimit": backoff_limit,
        "podFailurePolicy": failure_policy(container),
        "podReplacementPolicy": "Failed",
        "manualSelector": False,
        "template": {"metadata": template, "spec": pod_spec},
    }
    if active_deadline:
        spec["activeDeadlineSeconds"] = active_deadline
    meta = metadata(body, name, {**labels, **(job_labels or {})}, ctx)
    meta["labels"][naming.SPEC_HASH] = _digest(spec, inputs)
    spec["suspend"] = suspend
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def kueue_labels(queue_name: str | None, priority_class: str | None, ctx: Context) -> dict[str, str]:
    """The Job labels that queue it in Kueue (and its WorkloadPriorityClass); none on one machine."""
    if not queue_name or ctx.local:
        return {}
    return {QUEUE_LABEL: queue_name, **({PRIORITY_LABEL: priority_class} if priority_class else {})}


# --- the named structure of a kind's children --------------------------------------------------------


def child(kind: str, name: Callable[[str], str]) -> dict[str, Any]:
    """The metadata of a field of a kind's children structure: the child's kind and how its name follows
    from the owner's (`spec: dict = field(metadata=child("ConfigMap", naming.spec_configmap))`)."""
    return {"kind": kind, "name": name}


def child_keys(structure: type, owner: str) -> list[ChildKey]:
    """Every child the structure declares, as (kind, name) for an owner named `owner`."""
    return [(item.metadata["kind"], item.metadata["name"](owner)) for item in fields(structure)]


def objects(children: Any) -> list[dict[str, Any]]:
    """The children that exist in this plan, in declaration order (a field left None is not wanted)."""
    return [obj for item in fields(children) if (obj := getattr(children, item.name)) is not None]

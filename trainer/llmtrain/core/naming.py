"""Deterministic child names and the labels every child carries."""

from __future__ import annotations

from typing import Any

from ..api.common import GROUP

MANAGED_BY = "llmtrain-operator"
PROGRESS_KEY = "progress.json"
SPEC_KEY = "resource.yaml"
SPEC_HASH = f"{GROUP}/spec-hash"
RUN_LABEL = f"{GROUP}/run"
MASTER_PORT = 29500


def kind_label(kind: str) -> str:
    """`llmtrain.dev/datasource`, `llmtrain.dev/trainingrun`, `llmtrain.dev/modelexport`."""
    return f"{GROUP}/{kind.lower()}"


#: the labels the operator selects its children by (its watches, its Pod lookups)
IDENTITY_LABELS = frozenset(
    ["app.kubernetes.io/managed-by"] + [kind_label(k) for k in ("DataSource", "TrainingRun", "ModelExport")]
)


def ingest_job(name: str) -> str:
    return f"{name}-ingest"


def stage_job(name: str, stage: str) -> str:
    """A DataSource's Job for one ingest stage after the scan (dedup, cluster, tokenizer, encode, manifest)."""
    return f"{name}-{stage}"


def train_job(name: str) -> str:
    """The Indexed Job and its headless Service: rank i's pod is `<name>-train-i.<name>-train`."""
    return f"{name}-train"


def export_job(name: str) -> str:
    return f"{name}-export"


def spec_configmap(kind: str, name: str) -> str:
    suffix = {"DataSource": "ingest", "TrainingRun": "train", "ModelExport": "export"}[kind]
    return f"{name}-{suffix}-spec"


def progress_configmap(name: str) -> str:
    return f"{name}-progress"


def trainer_account(name: str) -> str:
    """ServiceAccount, Role and RoleBinding that may update `<name>-progress` and nothing else."""
    return f"{name}-trainer"


def master_address(name: str) -> str:
    return f"{train_job(name)}-0.{train_job(name)}"


def labels(kind: str, name: str, component: str, run: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "llmtrain",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        kind_label(kind): name,
    }
    if run:
        out[RUN_LABEL] = run
    return out


def selector(kind: str, name: str) -> str:
    """Label selector for every pod and object the resource owns."""
    return f"{kind_label(kind)}={name}"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }

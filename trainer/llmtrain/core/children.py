"""Desired child objects of each kind: ConfigMaps, Jobs, the headless Service, the trainer's RBAC."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import yaml

from .. import exitcodes
from ..api import DataSource, ModelExport, TrainingRun
from . import naming, pods, uris
from .context import Context

JOB_INDEX = "$(JOB_COMPLETION_INDEX)"
INDEX_ENV = {
    "name": "JOB_COMPLETION_INDEX",
    "valueFrom": {"fieldRef": {"fieldPath": ("metadata.annotations['batch.kubernetes.io/job-completion-index']")}},
}
METRICS_PORT = 9400
#: Measured synchronous DCP save bandwidth is ~0.37 GB/s per node on a laptop disk (docs/benchmarks.md);
#: the grace period assumes a slow 0.2 GB/s plus a step, so SIGTERM always leaves time for a save.
SAVE_BYTES_PER_SECOND = 0.2e9


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _meta(body: dict[str, Any], name: str, labels: dict[str, str], ctx: Context) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": {**ctx.labels, **labels},
        "ownerReferences": [naming.owner_reference(body)],
    }


#: Fields only the operator acts on: editing them never restarts a running workload.
OPERATOR_ONLY = ("suspend", "queueName", "pendingTimeoutSeconds")


def _document(resource: DataSource | TrainingRun | ModelExport, namespace: str) -> dict[str, Any]:
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
        "metadata": _meta(body, name, labels, ctx),
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
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": completions,
        "completionMode": "Indexed",
        "backoffLimit": backoff_limit,
        "podFailurePolicy": failure_policy(container),
        "podReplacementPolicy": "Failed",
        "manualSelector": False,
        "template": {"metadata": {"labels": {**ctx.labels, **labels}}, "spec": pod_spec},
    }
    if active_deadline:
        spec["activeDeadlineSeconds"] = active_deadline
    meta = _meta(body, name, {**labels, **(job_labels or {})}, ctx)
    meta["labels"][naming.SPEC_HASH] = _digest(spec, inputs)
    spec["suspend"] = suspend
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


# --- DataSource -------------------------------------------------------------------------------------


def datasource(body: dict[str, Any], source: DataSource, ctx: Context, merge: bool) -> list[dict[str, Any]]:
    """The spec ConfigMap and the ingest Job; with workers > 1, the merge Job once every part is done."""
    namespace = body["metadata"]["namespace"]
    uris.check_sources(source, ctx)
    output = uris.dataset_uri(source, namespace, ctx)
    labels = naming.labels("DataSource", source.name, "ingest")
    configmap = spec_configmap(body, [_document(source, namespace)], labels, ctx)
    claims = sorted(set(uris.source_claims(source)) | set(uris.claims([output])))
    vols, mounts = pods.volumes(configmap["metadata"]["name"], claims, uris.secret_names(source))
    workers = source.spec.workers
    base = ["ingest", "-f", f"{pods.SPEC_DIR}/{naming.SPEC_KEY}", "--name", source.name, "--output", output]
    if ctx.local and ctx.base_dir:
        base += ["--base-dir", ctx.base_dir]
    amounts = pods.resources(source.spec.resources.cpu, source.spec.resources.memory)
    image = source.spec.image

    def ingest_job(name: str, args: list[str], completions: int, env_extra: list[dict[str, Any]]) -> dict:
        container = pods.container(
            "ingest", ctx, image, ["llmtrain"], args, pods.env(ctx, pods.ingest_env(ctx)) + env_extra, mounts, amounts
        )
        spec = pods.pod_spec([container], vols, grace_seconds=60)
        return job(
            body,
            name,
            labels,
            spec,
            ctx,
            container="ingest",
            completions=completions,
            backoff_limit=3 * completions,
            inputs=configmap["data"],
        )

    if workers == 1:
        children = [ingest_job(naming.ingest_job(source.name), base, 1, [])]
    else:
        part_args = [*base, "--shard-index", JOB_INDEX, "--shard-count", str(workers)]
        children = [ingest_job(naming.ingest_job(source.name), part_args, workers, [INDEX_ENV])]
        if merge:
            merge_args = [*base, "--merge", "--shard-count", str(workers)]
            children.append(ingest_job(naming.merge_job(source.name), merge_args, 1, []))
    return [configmap, *children]


# --- TrainingRun ------------------------------------------------------------------------------------


def parameters(run: TrainingRun, vocab_size: int) -> int:
    """Parameter count of the Llama the run trains (embedding, blocks, norms, output)."""
    m = run.spec.model
    head = m.hidden_size // m.heads
    kv = (m.kv_heads or m.heads) * head
    inter = m.intermediate_size or 256 * math.ceil(8 * m.hidden_size / 3 / 256)
    block = m.hidden_size * (m.hidden_size * 2 + kv * 2) + 3 * m.hidden_size * inter + 2 * m.hidden_size
    embed = vocab_size * m.hidden_size * (1 if m.tie_embeddings else 2)
    return m.layers * block + embed + m.hidden_size


def grace_seconds(run: TrainingRun, vocab_size: int) -> int:
    """Time for SIGTERM -> finish the step -> save a checkpoint: fp32 weights plus two Adam moments
    (12 bytes per parameter) split across the nodes, at a pessimistic disk speed, plus two minutes."""
    per_node = 12 * parameters(run, vocab_size) / run.spec.resources.nodes
    return int(min(3600, 120 + per_node / SAVE_BYTES_PER_SECOND))


def trainingrun(
    body: dict[str, Any], run: TrainingRun, source: DataSource, source_namespace: str, ctx: Context
) -> list[dict[str, Any]]:
    """Spec ConfigMap, progress ConfigMap with its ServiceAccount/Role/RoleBinding, headless Service, Indexed Job."""
    namespace = body["metadata"]["namespace"]
    name = run.name
    labels = naming.labels("TrainingRun", name, "trainer", run=name)
    data = uris.dataset_uri(source, source_namespace, ctx)
    checkpoints = uris.checkpoints_uri(run, namespace, ctx)
    configmap = spec_configmap(body, [_document(run, namespace)], labels, ctx)
    progress = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(body, naming.progress_configmap(name), labels, ctx),
        "data": {},
    }
    account = naming.trainer_account(name)
    rbac = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(body, account, labels, ctx),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(body, account, labels, ctx),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [naming.progress_configmap(name)],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(body, account, labels, ctx),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, naming.train_job(name), labels, ctx),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {naming.kind_label("TrainingRun"): name, "app.kubernetes.io/component": "trainer"},
            "ports": [{"name": "rendezvous", "port": naming.MASTER_PORT, "targetPort": naming.MASTER_PORT}],
        },
    }
    compute = run.spec.resources
    gpus = compute.gpus_per_node
    claims = uris.claims([data, checkpoints])
    vols, mounts = pods.volumes(configmap["metadata"]["name"], claims, [], shm=True)
    env_extra = {
        "LLMTRAIN_MASTER_ADDR": naming.master_address(name),
        "LLMTRAIN_MASTER_PORT": str(naming.MASTER_PORT),
        "LLMTRAIN_PROGRESS_URI": f"configmap://{namespace}/{naming.progress_configmap(name)}",
        "LLMTRAIN_METRICS_PORT": str(METRICS_PORT),
    }
    args = [
        f"--nnodes={compute.nodes}",
        f"--nproc-per-node={max(gpus, 1)}",
        f"--node-rank={JOB_INDEX}",
        "--master-addr=$(LLMTRAIN_MASTER_ADDR)",
        "--master-port=$(LLMTRAIN_MASTER_PORT)",
        "--max-restarts=0",
        "-m",
        "llmtrain.cli",
        "train",
        "-f",
        f"{pods.SPEC_DIR}/{naming.SPEC_KEY}",
        "--name",
        name,
        "--data",
        data,
        "--checkpoints",
        checkpoints,
        "--progress",
        "$(LLMTRAIN_PROGRESS_URI)",
        "--metrics-dir",
        f"{pods.SCRATCH}/metrics",
    ]
    extended = {compute.gpu_resource_name: gpus} if gpus else None
    trainer = pods.container(
        "trainer",
        ctx,
        run.spec.image,
        ["llmtrain", "launch", "--"],
        args,
        [INDEX_ENV, *pods.env(ctx, env_extra)],
        mounts,
        pods.resources(compute.cpu, compute.memory, extended),
    )
    trainer["ports"] = [
        {"name": "rendezvous", "containerPort": naming.MASTER_PORT},
        {"name": "metrics", "containerPort": METRICS_PORT},
    ]
    placement: dict[str, Any] = {"subdomain": naming.train_job(name)}
    if compute.node_selector:
        placement["nodeSelector"] = dict(compute.node_selector)
    if compute.tolerations:
        placement["tolerations"] = [t.to_wire() for t in compute.tolerations]
    vocab = source.spec.tokenizer.vocab_size
    spec = pods.pod_spec([trainer], vols, grace_seconds(run, vocab), service_account=account, extra=placement)
    kueue = bool(run.spec.queue_name) and not ctx.local  # no Kueue on one machine: run at once
    queue = {"kueue.x-k8s.io/queue-name": run.spec.queue_name} if kueue else None
    train = job(
        body,
        naming.train_job(name),
        labels,
        spec,
        ctx,
        container="trainer",
        completions=compute.nodes,
        # one retryable failure usually fails every node's pod (the others lose their peers)
        backoff_limit=run.spec.max_restarts * compute.nodes,
        suspend=run.spec.suspend or kueue,
        active_deadline=run.spec.active_deadline_seconds,
        job_labels=queue,
        inputs=configmap["data"],
    )
    train["metadata"]["annotations"] = {"llmtrain.dev/suspend": "true" if run.spec.suspend else "false"}
    return [configmap, progress, *rbac, service, train]


# --- ModelExport ------------------------------------------------------------------------------------


def modelexport(
    body: dict[str, Any],
    export: ModelExport,
    checkpoint: str,
    source: DataSource,
    source_namespace: str,
    run: TrainingRun | None,
    ctx: Context,
) -> list[dict[str, Any]]:
    """Spec ConfigMap (the ModelExport, and its TrainingRun for the shape check) and the export Job."""
    namespace = body["metadata"]["namespace"]
    labels = naming.labels("ModelExport", export.name, "export", run=run.name if run else None)
    documents = [_document(export, namespace)] + ([_document(run, namespace)] if run else [])
    configmap = spec_configmap(body, documents, labels, ctx)
    data = uris.dataset_uri(source, source_namespace, ctx)
    output = uris.export_uri(export, namespace, ctx)
    vols, mounts = pods.volumes(configmap["metadata"]["name"], uris.claims([checkpoint, data, output]), [])
    args = [
        "export",
        "-f",
        f"{pods.SPEC_DIR}/{naming.SPEC_KEY}",
        "--name",
        export.name,
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "--output",
        output,
        "--cache",
        f"{pods.SCRATCH}/llmtrain-cache",
    ]
    amounts = pods.resources(export.spec.resources.cpu, export.spec.resources.memory)
    container = pods.container("export", ctx, export.spec.image, ["llmtrain"], args, pods.env(ctx), mounts, amounts)
    spec = pods.pod_spec([container], vols, grace_seconds=60)
    return [
        configmap,
        job(body, naming.export_job(export.name), labels, spec, ctx, container="export", inputs=configmap["data"]),
    ]

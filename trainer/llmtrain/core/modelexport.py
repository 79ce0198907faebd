"""A ModelExport: its children (spec ConfigMap, export Job), what it waits for (the TrainingRun's
checkpoint, the DataSource's tokenizer), and its status (the artifacts and what their checks measured)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from ..api import DataSource, ModelExport, TrainingRun
from . import checkpoints, children, datasource, jobs, naming, parsed, pods, trainingrun, uris
from .context import Context
from .plan import ChildKey, Observed, Outcome
from .status import StatusBuilder

KIND = "ModelExport"
MAX_ARTIFACTS = 64
#: What the status keeps of an artifact's deployment check.
ARTIFACT_VALIDATION = (
    "passed",
    "runtime",
    "maxRelativeError",
    "greedyMatch",
    "tokenizerMatch",
    "perplexity",
    "perplexityIncrease",
    "message",
)


@dataclass
class Children:
    """The spec ConfigMap (the ModelExport, and its TrainingRun for the shape check) and the export Job."""

    spec: dict[str, Any] = field(metadata=children.child("ConfigMap", partial(naming.spec_configmap, KIND)))
    job: dict[str, Any] = field(metadata=children.child("Job", naming.export_job))


def child_keys(body: dict[str, Any]) -> list[ChildKey]:
    return children.child_keys(Children, body["metadata"]["name"])


def dependency_keys(body: dict[str, Any], found: dict[ChildKey, dict[str, Any]] | None = None) -> list[ChildKey]:
    """Its TrainingRun and DataSource; call again with what was found (a run names its DataSource: the
    first of a mixture)."""
    spec = body.get("spec") or {}
    run_ref = (spec.get("trainingRunRef") or {}).get("name")
    run = (found or {}).get((trainingrun.KIND, run_ref)) if run_ref else None
    if run is not None and not spec.get("dataSourceRef"):
        sources = trainingrun.data_source_names(run)
        return [(trainingrun.KIND, run_ref), (datasource.KIND, sources[0] if sources else "")]
    keys = []
    if run_ref:
        keys.append((trainingrun.KIND, run_ref))
    if spec.get("dataSourceRef"):
        keys.append((datasource.KIND, spec["dataSourceRef"]["name"]))
    return keys


def build(
    body: dict[str, Any],
    export: ModelExport,
    checkpoint: str,
    source: DataSource,
    source_namespace: str,
    run: TrainingRun | None,
    ctx: Context,
) -> Children:
    """Spec ConfigMap (the ModelExport, and its TrainingRun for the shape check) and the export Job."""
    namespace = body["metadata"]["namespace"]
    labels = naming.labels(KIND, export.name, "export", run=run.name if run else None)
    documents = [children.document(export, namespace)] + ([children.document(run, namespace)] if run else [])
    configmap = children.spec_configmap(body, documents, labels, ctx)
    data = uris.dataset_uri(source, source_namespace, ctx)
    output = uris.export_uri(export, namespace, ctx)
    controls = export.spec.pod
    claims = uris.claims([checkpoint, data, output])
    vols, mounts = pods.volumes(configmap["metadata"]["name"], claims, [], shm_size=controls.shm_size)
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
    compute = export.spec.resources
    amounts = pods.resources(compute.cpu, compute.memory, pods.extended_resources(controls))
    env = pods.env(ctx) + pods.user_env(controls)
    container = pods.container("export", ctx, export.spec.image, ["llmtrain"], args, env, mounts, amounts)
    spec = pods.pod_spec([container], vols, grace_seconds=60, extra=pods.scheduling(controls, compute))
    queue = children.kueue_labels(export.spec.queue_name, export.spec.workload_priority_class_name, ctx)
    job = children.job(
        body,
        naming.export_job(export.name),
        labels,
        spec,
        ctx,
        container="export",
        suspend=bool(queue),
        job_labels=queue or None,
        inputs=configmap["data"],
        pod_labels=controls.labels,
        pod_annotations=controls.annotations,
    )
    return Children(configmap, job)


class Status(StatusBuilder):
    """An export's status: the checkpoint it reads, and then its artifacts."""

    def waiting_for_checkpoint(self, waiting: checkpoints.Waiting) -> None:
        if waiting.state == "missing":
            self.waiting_for("WaitingForTrainingRun", waiting.message)
            return
        if waiting.state == "failed":
            self.waiting_for(
                "TrainingRunFailed", f"{waiting.message}; export one of its checkpoints with checkpoint: step"
            )
        else:
            self.waiting_for("WaitingForCheckpoint", waiting.message)
        self.condition("CheckpointReady", False, "WaitingForCheckpoint", self.status["message"])

    def exported(self, report: dict[str, Any], checkpoint: str, report_uri: str) -> None:
        """Succeeded: the checkpoint exported and each artifact with its check, from the export's report."""
        status = self.status
        ckpt = report.get("checkpoint") or {}
        status["checkpointUri"] = ckpt.get("uri") or checkpoint
        if ckpt.get("step") is not None:
            status["checkpointStep"] = ckpt["step"]
        artifacts = [_artifact(a) for a in report.get("artifacts") or [] if isinstance(a, dict)]
        status["artifacts"] = artifacts[:MAX_ARTIFACTS]
        status["reportUri"] = report.get("reportUri") or report_uri
        kinds = ", ".join(
            f"{a['format']}" + (f" {a['quantization']}" if a["quantization"] != "none" else "")
            for a in status["artifacts"]
        )
        self.phase(
            "Succeeded", "Exported", f"step {status.get('checkpointStep')}: {kinds}; every deployment check passed"
        )


def _artifact(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: item[k] for k in ("format", "quantization", "uri", "bytes", "sha256") if k in item}
    validation = item.get("validation") or {}
    if validation:
        out["validation"] = {k: validation[k] for k in ARTIFACT_VALIDATION if validation.get(k) is not None}
        out["validation"].setdefault("passed", False)
    return out


def _checkpoint(
    export: ModelExport, namespace: str, observed: Observed, ctx: Context, status: Status
) -> tuple[str, str, TrainingRun | None] | None:
    """(checkpoint URI, DataSource name, TrainingRun) once the checkpoint exists; None while waiting."""
    spec = export.spec
    if spec.training_run_ref is None:
        checkpoint = uris.explicit_checkpoint_uri(export, ctx) or ""
        return checkpoint, spec.data_source_ref.name if spec.data_source_ref else "", None
    name = spec.training_run_ref.name
    found = observed.dependencies.get((trainingrun.KIND, name))
    waiting = checkpoints.wait(found, name, spec.checkpoint, spec.step)
    if waiting is not None:
        status.waiting_for_checkpoint(waiting)
        return None
    run = parsed.model(TrainingRun, found)
    source = spec.data_source_ref.name if spec.data_source_ref else run.spec.mixture()[0][0]
    return uris.checkpoints_uri(run, namespace, ctx), source, run


def reconcile(
    body: dict[str, Any], export: ModelExport, observed: Observed, ctx: Context, status: Status, now: datetime
) -> Outcome:
    """Wait for the checkpoint and the DataSource; run the export Job; Succeeded with its artifacts."""
    namespace = body["metadata"]["namespace"]
    found = _checkpoint(export, namespace, observed, ctx, status)
    if found is None:
        return Outcome()
    checkpoint, source_name, run = found
    status.condition("CheckpointReady", True, "CheckpointReady", checkpoint)
    found_source = datasource.ready(observed, source_name, status, None)
    if found_source is None:
        return Outcome()
    source = parsed.model(DataSource, found_source)
    built = build(body, export, checkpoint, source, namespace, run, ctx)
    desired, deletions, state = jobs.run_in_turn(status, [(built.job, 1, "export")], observed)
    if state == "Suspended":
        jobs.queued(status, export.spec.queue_name)
    latest = observed.children.get(("Job", desired[-1]["metadata"]["name"])) if desired else None
    if state == "Complete":
        report = jobs.final_report(observed.children.get(("Job", built.job["metadata"]["name"])), observed.pods) or {}
        status.exported(report, checkpoint, f"{uris.export_uri(export, namespace, ctx)}/export-report.json")
    return Outcome([built.spec, *desired], deletions, jobs.recheck_missing_pods(latest, observed.pods, ctx))

"""reconcile(resource, observed, context, now) -> Plan: the children to create, update or delete, the
status to write and the Events to post. Level-based and idempotent: the same world gives the same plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api import DataSource, ModelExport, SpecError, TrainingRun
from . import children, diagnosis, naming, parsed, uris
from .conditions import is_true
from .context import Context
from .diagnosis import Finding
from .events import Event, transitions
from .status import StatusBuilder, apply_progress, data_stats, final_report, iso, job_pods, job_status, parse_time

Key = tuple[str, str]  # (kind, name)
TERMINAL = ("Succeeded", "Failed")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SUSPEND_ANNOTATION = "llmtrain.dev/suspend"


@dataclass
class Observed:
    """What the shell read: the resource's children and pods, the resources it depends on, progress."""

    children: dict[Key, dict[str, Any]] = field(default_factory=dict)
    #: objects with a child's name that a previous resource of the same kind and name owns (deleted before
    #: the garbage collector got to them, or created in a race with that deletion): never used
    leftovers: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    dependencies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    progress: dict[str, Any] | None = None


@dataclass
class Action:
    """One API call: create/update an object, patch one, or delete one (propagation Background)."""

    verb: str  # create | update | patch | delete
    object: dict[str, Any]
    patch: dict[str, Any] | None = None

    @property
    def key(self) -> Key:
        return self.object["kind"], self.object["metadata"]["name"]


@dataclass
class Plan:
    actions: list[Action]
    status: dict[str, Any]
    events: list[Event]
    #: Children the shell should read next time (so it never has to guess names).
    watch: list[Key] = field(default_factory=list)


def child_keys(body: dict[str, Any]) -> list[Key]:
    """Every child a resource may own, for the shell to read before reconciling."""
    kind, name = body["kind"], body["metadata"]["name"]
    spec = naming.spec_configmap(kind, name)
    if kind == "DataSource":
        return [("ConfigMap", spec), ("Job", naming.ingest_job(name)), ("Job", naming.merge_job(name))]
    if kind == "TrainingRun":
        account = naming.trainer_account(name)
        return [
            ("ConfigMap", spec),
            ("ConfigMap", naming.progress_configmap(name)),
            ("ServiceAccount", account),
            ("Role", account),
            ("RoleBinding", account),
            ("Service", naming.train_job(name)),
            ("Job", naming.train_job(name)),
        ]
    return [("ConfigMap", spec), ("Job", naming.export_job(name))]


def dependency_keys(body: dict[str, Any], found: dict[Key, dict[str, Any]] | None = None) -> list[Key]:
    """Resources this one reads; call again with what was found (an export's TrainingRun names its DataSource)."""
    spec = body.get("spec") or {}
    run_ref = (spec.get("trainingRunRef") or {}).get("name")
    run = (found or {}).get(("TrainingRun", run_ref)) if run_ref else None
    if body["kind"] == "ModelExport" and run is not None and not spec.get("dataSourceRef"):
        return [
            ("TrainingRun", run_ref),
            ("DataSource", ((run.get("spec") or {}).get("dataSourceRef") or {}).get("name", "")),
        ]
    if body["kind"] == "TrainingRun":
        return [("DataSource", (spec.get("dataSourceRef") or {}).get("name", ""))]
    if body["kind"] == "ModelExport":
        keys = []
        if spec.get("trainingRunRef"):
            keys.append(("TrainingRun", spec["trainingRunRef"]["name"]))
        if spec.get("dataSourceRef"):
            keys.append(("DataSource", spec["dataSourceRef"]["name"]))
        return keys
    return []


def reconcile(body: dict[str, Any], observed: Observed, ctx: Context, now: datetime) -> Plan:
    """The plan for one resource. Never raises on a resource the API server accepted."""
    old = body.get("status") or {}
    generation = body["metadata"].get("generation")
    summary = "Ready" if body["kind"] == "DataSource" else "Succeeded"
    builder = StatusBuilder(old, generation, now, summary)
    desired: list[dict[str, Any]] = []
    deletions: list[dict[str, Any]] = []
    try:
        resource = parsed.resource(body)
        namespace = body["metadata"]["namespace"]
        if isinstance(resource, DataSource):
            desired, deletions = _datasource(body, resource, observed, ctx, builder)
        elif isinstance(resource, TrainingRun):
            desired, deletions = _trainingrun(body, resource, namespace, observed, ctx, builder, now)
        elif isinstance(resource, ModelExport):
            desired, deletions = _modelexport(body, resource, namespace, observed, ctx, builder)
    except (SpecError, uris.PlacementError) as exc:
        message = str(exc) if isinstance(exc, uris.PlacementError) else "; ".join(map(str, exc.problems))
        builder.fail(Finding("InvalidSpec", message or str(exc), permanent=True))
    status = builder.done()
    if old.get("phase") in TERMINAL and status.get("phase") not in TERMINAL and _same_generation(old, generation):
        status = old  # a finished run whose Job disappeared (TTL, a person) is not run again
        desired, deletions = [], []
    actions = _actions(desired, observed) + [Action("delete", d) for d in deletions]
    if observed.leftovers:  # removed first (a Job must not read an old spec ConfigMap); then created anew
        actions = [Action("delete", obj) for obj in observed.leftovers.values()]
    return Plan(actions, status, transitions(old, status), child_keys(body))


def _same_generation(old: dict[str, Any], generation: int | None) -> bool:
    return old.get("observedGeneration") == generation


def _actions(desired: list[dict[str, Any]], observed: Observed) -> list[Action]:
    """Create what is missing; update changed ConfigMaps, Services and RBAC; patch a Job's suspend; Jobs
    whose pod template changed are deleted by the kind's logic (their templates are immutable). Labels the
    operator set are restored: it finds its children by them."""
    out: list[Action] = []
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        found = observed.children.get(key)
        labels = _missing_labels(found, obj) if found is not None else {}
        if found is None:
            out.append(Action("create", obj))
        elif obj["kind"] == "Job":
            suspend = _suspend_patch(found, obj)
            patch = ({"spec": {"suspend": suspend}} if suspend is not None else {}) | (
                {"metadata": {"labels": labels}} if labels else {}
            )
            if patch:
                out.append(Action("patch", obj, patch))
        elif obj["kind"] == "ConfigMap" and key[1].endswith("-progress"):
            if labels:  # the trainer writes its data: only the labels are put back
                out.append(Action("patch", obj, {"metadata": {"labels": labels}}))
        elif (
            labels
            or any(found.get(k) != obj.get(k) for k in ("data", "rules", "subjects", "roleRef"))
            or (obj["kind"] == "Service" and found.get("spec", {}).get("selector") != obj["spec"]["selector"])
        ):
            out.append(Action("update", obj))
    return out


def _missing_labels(found: dict[str, Any], want: dict[str, Any]) -> dict[str, str]:
    """The labels the operator finds its children by (managed-by, owner) that a child lost or had changed;
    its other labels, and labels others added, are left alone."""
    have = found.get("metadata", {}).get("labels") or {}
    wanted = want["metadata"].get("labels") or {}
    return {k: v for k, v in wanted.items() if k in naming.IDENTITY_LABELS and have.get(k) != v}


def _suspend_patch(found: dict[str, Any], want: dict[str, Any]) -> bool | None:
    """The suspend value to patch onto an existing Job, if any. A queued Job (Kueue) is created suspended
    and Kueue admits it by unsuspending it: the operator then only suspends it again when the spec asks."""
    have, wanted = bool(found.get("spec", {}).get("suspend")), bool(want["spec"].get("suspend"))
    finished = diagnosis.job_condition(found, "Complete") or diagnosis.job_condition(found, "Failed")
    if have == wanted or finished:
        return None
    if QUEUE_LABEL in (want["metadata"].get("labels") or {}):
        asked = (want["metadata"].get("annotations") or {}).get(SUSPEND_ANNOTATION) == "true"
        return True if asked and not have else None
    return wanted


def _stale(job: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    have = ((job or {}).get("metadata", {}).get("labels") or {}).get(naming.SPEC_HASH)
    return job is not None and have != want["metadata"]["labels"][naming.SPEC_HASH]


def _run_jobs(
    builder: StatusBuilder,
    wanted: list[dict[str, Any]],
    observed: Observed,
    expected_pods: list[int],
    what: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Jobs that run one after another (ingest then merge): the status of the first unfinished one.
    A Job whose spec changed is deleted (pods get their grace period) and recreated next time."""
    desired: list[dict[str, Any]] = []
    for index, want in enumerate(wanted):
        job = observed.children.get(("Job", want["metadata"]["name"]))
        if _stale(job, want):
            builder.waiting_for("SpecChanged", f"the spec changed: replacing Job {want['metadata']['name']}")
            return desired, [job], "Replacing"
        desired.append(want)
        state = job_status(builder, job, observed.pods, expected_pods[index], what[index])
        if state != "Complete":
            return desired, [], state
    return desired, [], "Complete"


# --- DataSource -------------------------------------------------------------------------------------


def _datasource(body, source: DataSource, observed: Observed, ctx: Context, builder: StatusBuilder):
    namespace = body["metadata"]["namespace"]
    merge = source.spec.workers > 1
    objects = children.datasource(body, source, ctx, merge=True)
    configmap, jobs = objects[0], objects[1:]
    counts = [source.spec.workers, 1] if merge else [1]
    names = ["ingest (scan parts)", "merge"] if merge else ["ingest"]
    desired, deletions, state = _run_jobs(builder, jobs, observed, counts, names)
    if state == "Complete":
        report = final_report(observed.children.get(("Job", jobs[-1]["metadata"]["name"])), observed.pods) or {}
        output = uris.dataset_uri(source, namespace, ctx)
        stats = data_stats(report)
        builder.status["stats"] = stats or builder.status.get("stats") or {}
        builder.status["shardsUri"] = output
        builder.status["tokenizerUri"] = report.get("tokenizer") or f"{output.rstrip('/')}/tokenizer"
        docs, tokens = stats.get("documentsOut"), stats.get("tokensTrain")
        builder.phase("Succeeded", "Ingested", f"{docs} documents, {tokens} training tokens at {output}")
    return [configmap, *desired], deletions


# --- TrainingRun ------------------------------------------------------------------------------------


def _dependency(observed: Observed, kind: str, name: str) -> dict[str, Any] | None:
    return observed.dependencies.get((kind, name))


def _ready_datasource(observed: Observed, name: str, builder: StatusBuilder, condition: str | None):
    """The DataSource when it is Ready; otherwise sets a waiting status and returns None."""
    found = _dependency(observed, "DataSource", name)
    status = (found or {}).get("status") or {}
    ready = found is not None and is_true(status.get("conditions"), "Ready")
    if condition:
        builder.condition(
            condition,
            ready,
            "DataSourceReady" if ready else "WaitingForDataSource",
            "" if ready else f"DataSource {name} is not ready",
        )
    if ready:
        return found
    if found is None:
        builder.waiting_for("WaitingForDataSource", f"DataSource {name} does not exist yet")
    elif status.get("phase") == "Failed":
        builder.waiting_for("DataSourceFailed", f"DataSource {name} failed: {status.get('message', '')}")
    else:
        builder.waiting_for("WaitingForDataSource", f"waiting for DataSource {name} ({status.get('phase') or 'new'})")
    return None


def _trainingrun(body, run: TrainingRun, namespace: str, observed: Observed, ctx: Context, builder, now):
    status = builder.status
    status["totalSteps"] = run.spec.training.max_steps
    status.setdefault("progress", f"{status.get('step') or 0}/{run.spec.training.max_steps}")
    status.setdefault("restarts", 0)
    found = _ready_datasource(observed, run.spec.data_source_ref.name, builder, "DataReady")
    if found is None:
        return [], []
    source = parsed.model(DataSource, found)
    objects = children.trainingrun(body, run, source, found["metadata"].get("namespace") or namespace, ctx)
    job_want = objects[-1]
    job = observed.children.get(("Job", job_want["metadata"]["name"]))
    if _stale(job, job_want):
        builder.waiting_for(
            "SpecChanged", "the spec changed: the trainer Job is replaced and resumes from the latest checkpoint"
        )
        return objects[:-1], [job]
    nodes = run.spec.resources.nodes
    state = job_status(builder, job, observed.pods, nodes, "training", run.spec.resources.gpu_resource_name)
    apply_progress(status, observed.progress, run.spec.training.max_steps, iso(now))
    if state == "Complete":  # a trainer exits 0 only after its last step, whether or not its last report landed
        status["step"] = run.spec.training.max_steps
        status["progress"] = f"{run.spec.training.max_steps}/{run.spec.training.max_steps}"
    mine = job_pods(job, observed.pods)
    failed = int((job or {}).get("status", {}).get("failed") or 0)
    restarts = -(-failed // nodes)
    if state == "Failed":  # the failure that ended the run was not followed by a restart
        restarts = max(0, restarts - 1)
    if restarts > int(status.get("restarts") or 0):
        last = diagnosis.failed_pod(mine)
        if last is not None:
            status["lastFailure"] = last.to_status()
    status["restarts"] = max(restarts, int(status.get("restarts") or 0))
    suspended = state == "Suspended"
    queued = suspended and not run.spec.suspend and bool(run.spec.queue_name) and not ctx.local
    builder.condition(
        "Suspended",
        suspended,
        "Queued" if queued else ("Suspended" if suspended else "NotSuspended"),
        f"waiting for Kueue to admit it from queue {run.spec.queue_name}" if queued else "",
    )
    if suspended:
        builder.phase(
            "Suspended",
            "Queued" if queued else "Suspended",
            f"queued in {run.spec.queue_name}"
            if queued
            else "suspended (spec.suspend): pods checkpoint and stop; unset spec.suspend to resume",
        )
    elif state == "Complete":
        status.pop("eta", None)
        builder.phase("Succeeded", "Trained", _summary(status))
    elif state == "Running":
        builder.status["message"] = _summary(status)
    deletions: list[dict[str, Any]] = []
    timeout = run.spec.pending_timeout_seconds
    started = parse_time(
        ((job or {}).get("status") or {}).get("startTime") or (job or {}).get("metadata", {}).get("creationTimestamp")
    )
    never_ran = state == "Starting" and not status.get("startTime") and started is not None
    if timeout and never_ran and (now - started).total_seconds() > timeout:
        cause = builder.status.get("message", "")
        builder.fail(
            Finding(
                "PendingTimeout",
                f"pods were not all running after pendingTimeoutSeconds ({timeout} s): {cause}",
                permanent=True,
            )
        )
        deletions.append(job)
    _stall(builder, run, state, now)
    builder.condition(
        "Alerting",
        bool(status.get("alerts")),
        (status.get("alerts") or [{}])[-1].get("type", "NoAlerts"),
        (status.get("alerts") or [{}])[-1].get("message", ""),
    )
    return objects, deletions


def _summary(status: dict[str, Any]) -> str:
    parts = [f"step {status.get('progress')}"]
    if status.get("loss") is not None:
        parts.append(f"loss {status['loss']:.4g}")
    if status.get("valLoss") is not None:
        parts.append(f"val {status['valLoss']:.4g}")
    if status.get("latestCheckpoint"):
        parts.append(f"checkpoint {status['latestCheckpoint']['step']}")
    return ", ".join(parts)


def _stall(builder: StatusBuilder, run: TrainingRun, state: str, now: datetime) -> None:
    status = builder.status
    last = parse_time(status.get("lastProgressTime") or status.get("startTime"))
    limit = run.spec.alerts.stall_seconds
    stalled = state == "Running" and last is not None and (now - last).total_seconds() > limit
    message = f"no step completed for more than {limit} s (step {status.get('step') or 0})" if stalled else ""
    builder.condition("Stalled", stalled, "NoProgress" if stalled else "Progressing", message)
    if stalled and not any(
        a.get("type") == "Stalled" and a.get("step") == status.get("step") for a in status.get("alerts") or []
    ):
        alert = {"type": "Stalled", "severity": "critical", "message": message, "time": iso(now)}
        if status.get("step") is not None:
            alert["step"] = status["step"]
        status["alerts"] = ((status.get("alerts") or []) + [alert])[-64:]


# --- ModelExport ------------------------------------------------------------------------------------


def _modelexport(body, export: ModelExport, namespace: str, observed: Observed, ctx: Context, builder):
    spec = export.spec
    run: TrainingRun | None = None
    if spec.training_run_ref is not None:
        name = spec.training_run_ref.name
        found = _dependency(observed, "TrainingRun", name)
        if found is None:
            builder.waiting_for("WaitingForTrainingRun", f"TrainingRun {name} does not exist yet")
            return [], []
        run_status = found.get("status") or {}
        run = parsed.model(TrainingRun, found)
        latest = (run_status.get("latestCheckpoint") or {}).get("step")
        finished = run_status.get("phase") == "Succeeded"
        ready = latest is not None and latest >= (spec.step or 0) if spec.checkpoint == "step" else finished
        if not ready:
            if run_status.get("phase") == "Failed":
                builder.waiting_for(
                    "TrainingRunFailed",
                    f"TrainingRun {name} failed: {run_status.get('message', '')};"
                    " export one of its checkpoints with checkpoint: step",
                )
            else:
                want = f"step {spec.step}" if spec.checkpoint == "step" else "the run to finish"
                builder.waiting_for(
                    "WaitingForCheckpoint",
                    f"waiting for TrainingRun {name}: {want} (at {run_status.get('progress') or 'no progress yet'})",
                )
            builder.condition("CheckpointReady", False, "WaitingForCheckpoint", builder.status["message"])
            return [], []
        checkpoint = uris.checkpoints_uri(run, namespace, ctx)
        source_name = spec.data_source_ref.name if spec.data_source_ref else run.spec.data_source_ref.name
    else:
        checkpoint = uris.explicit_checkpoint_uri(export, ctx) or ""
        source_name = spec.data_source_ref.name if spec.data_source_ref else ""
    builder.condition("CheckpointReady", True, "CheckpointReady", checkpoint)
    found_source = _ready_datasource(observed, source_name, builder, None)
    if found_source is None:
        return [], []
    source = parsed.model(DataSource, found_source)
    objects = children.modelexport(body, export, checkpoint, source, namespace, run, ctx)
    desired, deletions, state = _run_jobs(builder, objects[1:], observed, [1], ["export"])
    if state == "Complete":
        job = observed.children.get(("Job", objects[1]["metadata"]["name"]))
        report = final_report(job, observed.pods) or {}
        status = builder.status
        ckpt = report.get("checkpoint") or {}
        status["checkpointUri"] = ckpt.get("uri") or checkpoint
        if ckpt.get("step") is not None:
            status["checkpointStep"] = ckpt["step"]
        status["artifacts"] = [_artifact(a) for a in report.get("artifacts") or [] if isinstance(a, dict)][:64]
        status["reportUri"] = report.get("reportUri") or f"{uris.export_uri(export, namespace, ctx)}/export-report.json"
        kinds = ", ".join(
            f"{a['format']}" + (f" {a['quantization']}" if a["quantization"] != "none" else "")
            for a in status["artifacts"]
        )
        builder.phase(
            "Succeeded", "Exported", f"step {status.get('checkpointStep')}: {kinds}; every deployment check passed"
        )
    return [objects[0], *desired], deletions


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


def _artifact(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: item[k] for k in ("format", "quantization", "uri", "bytes", "sha256") if k in item}
    validation = item.get("validation") or {}
    if validation:
        out["validation"] = {k: validation[k] for k in ARTIFACT_VALIDATION if validation.get(k) is not None}
        out["validation"].setdefault("passed", False)
    return out

"""A TrainingRun: its children (spec and progress ConfigMaps, the trainer's ServiceAccount, Role and
RoleBinding, the headless Service, the Indexed trainer Job), what it reads (its DataSource, or each of a
mixture's, and the weights `spec.init` starts from), and its status: progress from the trainer's report,
checkpoints, restarts, suspension (Kueue), Stalled, alerts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from ..api import DataSource, TrainingRun
from ..api.trainingrun import ModelSpec
from ..model.shape import spec_parameter_count
from . import children, datasource, diagnosis, init_weights, jobs, naming, parsed, pods, uris
from .context import Context
from .diagnosis import Finding
from .init_weights import Start
from .plan import ChildKey, Observed, Outcome, sooner
from .progress import Alert, ProgressReport
from .status import StatusBuilder, parse_time

KIND = "TrainingRun"
METRICS_PORT = 9400
#: Measured synchronous DCP save bandwidth is ~0.37 GB/s per node on a laptop disk (docs/benchmarks.md);
#: the grace period assumes a slow 0.2 GB/s plus a step, so SIGTERM always leaves time for a save.
SAVE_BYTES_PER_SECOND = 0.2e9
MAX_ALERTS = 64
#: A deadline is looked at this long after it falls due (it is "more than N seconds", not "N seconds").
DEADLINE_SLACK = 1.0
#: The grace period when spec.model leaves the shape to the weights spec.init starts from (the operator
#: does not read their config.json): at the pace above, one node saves about 28 billion parameters in it.
UNKNOWN_SHAPE_GRACE_SECONDS = 1800


@dataclass
class Children:
    """Everything a run owns; the trainer's account may patch the progress ConfigMap and nothing else."""

    spec: dict[str, Any] = field(metadata=children.child("ConfigMap", partial(naming.spec_configmap, KIND)))
    progress: dict[str, Any] = field(metadata=children.child("ConfigMap", naming.progress_configmap))
    account: dict[str, Any] = field(metadata=children.child("ServiceAccount", naming.trainer_account))
    role: dict[str, Any] = field(metadata=children.child("Role", naming.trainer_account))
    binding: dict[str, Any] = field(metadata=children.child("RoleBinding", naming.trainer_account))
    service: dict[str, Any] = field(metadata=children.child("Service", naming.train_job))
    job: dict[str, Any] = field(metadata=children.child("Job", naming.train_job))


def child_keys(body: dict[str, Any]) -> list[ChildKey]:
    return children.child_keys(Children, body["metadata"]["name"])


def data_source_names(body: dict[str, Any]) -> list[str]:
    """The DataSources a run body reads, in spec order: `spec.dataSourceRef`, or each of `spec.data`."""
    spec = body.get("spec") or {}
    refs = [entry.get("dataSourceRef") for entry in spec.get("data") or []] or [spec.get("dataSourceRef")]
    return [ref["name"] for ref in refs if isinstance(ref, dict) and ref.get("name")]


def dependency_keys(body: dict[str, Any], found: dict[ChildKey, dict[str, Any]] | None = None) -> list[ChildKey]:
    """Every DataSource of its data, and the TrainingRun or ModelExport `spec.init` names."""
    sources = [(datasource.KIND, name) for name in data_source_names(body)]
    return sources + init_weights.dependency_keys(body.get("spec") or {})


def shape_known(model: ModelSpec | None) -> bool:
    """Whether spec.model alone gives the shape (with spec.init it may leave it to the weights)."""
    return model is not None and None not in (model.layers, model.hidden_size, model.heads)


def parameters(run: TrainingRun, vocab_size: int) -> int | None:
    """Parameter count of the Llama the run trains (embedding, blocks, norms, output); None when
    spec.model leaves the shape to the weights spec.init starts from."""
    return spec_parameter_count(run.spec.model, vocab_size) if shape_known(run.spec.model) else None


def grace_seconds(run: TrainingRun, vocab_size: int) -> int:
    """Time for SIGTERM -> finish the step -> save a checkpoint: fp32 weights plus two Adam moments
    (12 bytes per parameter) split across the nodes, at a pessimistic disk speed, plus two minutes; twice
    the writing with background saves (SIGTERM first waits for the one in flight, then saves its step);
    `UNKNOWN_SHAPE_GRACE_SECONDS` (1800 s) when the shape comes from the starting weights."""
    count = parameters(run, vocab_size)
    if count is None:
        return UNKNOWN_SHAPE_GRACE_SECONDS
    writes = 2 if run.spec.checkpointing.async_save else 1
    per_node = 12 * count / run.spec.resources.nodes
    return int(min(3600, 120 + writes * per_node / SAVE_BYTES_PER_SECOND))


# --- children ---------------------------------------------------------------------------------------


def build(
    body: dict[str, Any], run: TrainingRun, sources: list[tuple[DataSource, str]], start: Start | None, ctx: Context
) -> Children:
    """Spec ConfigMap, progress ConfigMap with its ServiceAccount/Role/RoleBinding, headless Service, Indexed
    Job. `sources`: each DataSource of the run's data with its namespace, in spec order; `start`: the
    weights spec.init starts from."""
    namespace = body["metadata"]["namespace"]
    labels = naming.labels(KIND, run.name, "trainer", run=run.name)
    configmap = children.spec_configmap(body, [children.document(run, namespace)], labels, ctx)
    progress = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": children.metadata(body, naming.progress_configmap(run.name), labels, ctx),
        "data": {},
    }
    account, role, binding = _rbac(body, run.name, labels, ctx)
    data = [uris.dataset_uri(source, source_namespace, ctx) for source, source_namespace in sources]
    vocab_size = sources[0][0].spec.tokenizer.vocab_size  # a mixture's tokenizers are identical (the trainer checks)
    job = _trainer_job(body, run, configmap, data, start, vocab_size, labels, ctx)
    return Children(configmap, progress, account, role, binding, _service(body, run.name, labels, ctx), job)


def _rbac(body: dict[str, Any], name: str, labels: dict[str, str], ctx: Context) -> tuple[dict, dict, dict]:
    """A ServiceAccount whose Role may get and patch the run's progress ConfigMap, nothing else."""
    account = naming.trainer_account(name)
    meta = partial(children.metadata, body, account, labels, ctx)
    return (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(), "automountServiceAccountToken": False},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(),
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
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": body["metadata"]["namespace"]}],
        },
    )


def _service(body: dict[str, Any], name: str, labels: dict[str, str], ctx: Context) -> dict[str, Any]:
    """The headless Service that gives rank i's pod the name `<name>-train-i.<name>-train` (rendezvous)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": children.metadata(body, naming.train_job(name), labels, ctx),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {naming.kind_label(KIND): name, "app.kubernetes.io/component": "trainer"},
            "ports": [{"name": "rendezvous", "port": naming.MASTER_PORT, "targetPort": naming.MASTER_PORT}],
        },
    }


def _trainer_job(
    body: dict[str, Any],
    run: TrainingRun,
    configmap: dict[str, Any],
    data: list[str],
    start: Start | None,
    vocab_size: int,
    labels: dict[str, str],
    ctx: Context,
) -> dict[str, Any]:
    """The Indexed Job of `nodes` pods running torchrun, Kueue's queue label when queued."""
    namespace, name, compute, controls = body["metadata"]["namespace"], run.name, run.spec.resources, run.spec.pod
    checkpoints = uris.checkpoints_uri(run, namespace, ctx)
    claims = uris.claims([*data, checkpoints, start.uri if start else None])
    mlflow = run.spec.tracking.mlflow if run.spec.tracking else None  # its credentials Secret, mounted as files
    secrets = [mlflow.credentials_secret_ref.name] if mlflow and mlflow.credentials_secret_ref else []
    vols, mounts = pods.volumes(configmap["metadata"]["name"], claims, secrets, shm=True, shm_size=controls.shm_size)
    env_extra = {
        "LLMTRAIN_MASTER_ADDR": naming.master_address(name),
        "LLMTRAIN_MASTER_PORT": str(naming.MASTER_PORT),
        "LLMTRAIN_PROGRESS_URI": f"configmap://{namespace}/{naming.progress_configmap(name)}",
        "LLMTRAIN_METRICS_PORT": str(METRICS_PORT),
    }
    gpus = compute.gpus_per_node
    extended = pods.extended_resources(controls, {compute.gpu_resource_name: gpus} if gpus else None)
    trainer = pods.container(
        "trainer",
        ctx,
        run.spec.image,
        ["llmtrain", "launch", "--"],
        _torchrun_args(run, data, start, checkpoints),
        [children.INDEX_ENV, *pods.env(ctx, env_extra), *pods.user_env(controls)],
        mounts,
        pods.resources(compute.cpu, compute.memory, extended),
    )
    trainer["ports"] = [
        {"name": "rendezvous", "containerPort": naming.MASTER_PORT},
        {"name": "metrics", "containerPort": METRICS_PORT},
    ]
    placement = {"subdomain": naming.train_job(name), **pods.scheduling(controls, compute)}
    account = naming.trainer_account(name)
    spec = pods.pod_spec([trainer], vols, grace_seconds(run, vocab_size), service_account=account, extra=placement)
    kueue = children.kueue_labels(run.spec.queue_name, run.spec.workload_priority_class_name, ctx)
    job = children.job(
        body,
        naming.train_job(name),
        labels,
        spec,
        ctx,
        container="trainer",
        completions=compute.nodes,
        # one retryable failure usually fails every node's pod (the others lose their peers)
        backoff_limit=run.spec.max_restarts * compute.nodes,
        suspend=run.spec.suspend or bool(kueue),  # no Kueue on one machine: run at once
        active_deadline=run.spec.active_deadline_seconds,
        job_labels=kueue or None,
        inputs=configmap["data"],
        pod_labels=controls.labels,
        pod_annotations=controls.annotations,
    )
    job["metadata"]["annotations"] = {"llmtrain.dev/suspend": "true" if run.spec.suspend else "false"}
    return job


def _torchrun_args(run: TrainingRun, data: list[str], start: Start | None, checkpoints: str) -> list[str]:
    """torchrun, then the trainer: `--data` once per DataSource in spec order, `--init` (and which
    checkpoint) when spec.init starts from existing weights."""
    compute = run.spec.resources
    return [
        f"--nnodes={compute.nodes}",
        f"--nproc-per-node={max(compute.gpus_per_node, 1)}",
        f"--node-rank={children.JOB_INDEX}",
        "--master-addr=$(LLMTRAIN_MASTER_ADDR)",
        "--master-port=$(LLMTRAIN_MASTER_PORT)",
        "--max-restarts=0",
        "-m",
        "llmtrain.cli",
        "train",
        "-f",
        f"{pods.SPEC_DIR}/{naming.SPEC_KEY}",
        "--name",
        run.name,
        *(arg for uri in data for arg in ("--data", uri)),
        *(start.args() if start else []),
        "--checkpoints",
        checkpoints,
        "--progress",
        "$(LLMTRAIN_PROGRESS_URI)",
        "--metrics-dir",
        f"{pods.SCRATCH}/metrics",
    ]


# --- status -----------------------------------------------------------------------------------------


def progress_report(configmap: dict[str, Any] | None) -> dict[str, Any] | None:
    """The progress report a trainer patched into its ConfigMap (`data["progress.json"]`), if any."""
    text = ((configmap or {}).get("data") or {}).get(naming.PROGRESS_KEY)
    try:
        report = json.loads(text) if text else None
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


class Status(StatusBuilder):
    """A run's status: the trainer's figures, checkpoints, restarts, suspension, Stalled and alerts."""

    def steps(self, total_steps: int) -> None:
        self.status["totalSteps"] = total_steps
        self.status.setdefault("progress", f"{self.status.get('step') or 0}/{total_steps}")
        self.status.setdefault("restarts", 0)

    def mixture(self, run: TrainingRun) -> None:
        """A mixture's sources with their shares, until the trainer reports its figures for them."""
        if run.spec.data is not None and not self.status.get("sources"):
            self.status["sources"] = [{"name": name, "weight": share} for name, share in run.spec.mixture()]

    def progress(self, report: ProgressReport | None, total_steps: int) -> None:
        """Copy the trainer's figures from its progress report into the status."""
        status = self.status
        status["totalSteps"] = total_steps
        if report is None:
            status.setdefault("progress", f"{status.get('step') or 0}/{total_steps}")
            return
        if report.step > int(status.get("step") or 0) or not status.get("lastProgressTime"):
            status["lastProgressTime"] = self.now
        status["step"] = report.step
        status["progress"] = f"{report.step}/{total_steps}"
        status.update(report.status_figures())
        if report.initialized_from:
            status["initializedFrom"] = report.initialized_from
        for key, ref in (("latestCheckpoint", report.latest_checkpoint), ("bestCheckpoint", report.best_checkpoint)):
            if ref is not None:
                status[key] = ref.to_json()
        kept = [Alert.from_json(a) for a in status.get("alerts") or [] if a.get("type") == "Stalled"]
        merged = {alert.identity: alert for alert in [*kept, *report.alerts] if alert is not None}
        status["alerts"] = [alert.to_json() for alert in merged.values()][-MAX_ALERTS:]

    def finished(self, total_steps: int) -> None:
        """A trainer exits 0 only after its last step, whether or not its last report landed."""
        self.status["step"] = total_steps
        self.status["progress"] = f"{total_steps}/{total_steps}"

    def restarts(self, job: dict[str, Any] | None, pods_of_job: list[dict[str, Any]], nodes: int, state: str) -> None:
        """Times the run resumed: failed pods over nodes (one failure fails every node's pod); the last
        retryable failure is kept. The failure that ended a run was not followed by a restart."""
        failed = int((job or {}).get("status", {}).get("failed") or 0)
        restarts = -(-failed // nodes)
        if state == "Failed":
            restarts = max(0, restarts - 1)
        if restarts > int(self.status.get("restarts") or 0):
            last = diagnosis.failed_pod(pods_of_job)
            if last is not None:
                self.status["lastFailure"] = last.to_status()
        self.status["restarts"] = max(restarts, int(self.status.get("restarts") or 0))

    def suspension(self, run: TrainingRun, suspended: bool, ctx: Context) -> None:
        """Suspended by the spec, or queued: waiting for Kueue to admit it."""
        queued = suspended and not run.spec.suspend and bool(run.spec.queue_name) and not ctx.local
        self.condition(
            "Suspended",
            suspended,
            "Queued" if queued else ("Suspended" if suspended else "NotSuspended"),
            f"waiting for Kueue to admit it from queue {run.spec.queue_name}" if queued else "",
        )
        if suspended:
            self.phase(
                "Suspended",
                "Queued" if queued else "Suspended",
                f"queued in {run.spec.queue_name}"
                if queued
                else "suspended (spec.suspend): pods checkpoint and stop; unset spec.suspend to resume",
            )

    def summary(self) -> str:
        status = self.status
        parts = [f"step {status.get('progress')}"]
        if status.get("loss") is not None:
            parts.append(f"loss {status['loss']:.4g}")
        if status.get("valLoss") is not None:
            parts.append(f"val {status['valLoss']:.4g}")
        if status.get("latestCheckpoint"):
            parts.append(f"checkpoint {status['latestCheckpoint']['step']}")
        return ", ".join(parts)

    def stall(self, limit: int, running: bool) -> float | None:
        """Stalled (and a critical alert, once per step) when no step completed for more than `limit`
        seconds while running; returns the seconds until that would fall due."""
        status = self.status
        last = parse_time(status.get("lastProgressTime") or status.get("startTime"))
        quiet = (self.moment - last).total_seconds() if running and last is not None else None
        stalled = quiet is not None and quiet > limit
        message = f"no step completed for more than {limit} s (step {status.get('step') or 0})" if stalled else ""
        self.condition("Stalled", stalled, "NoProgress" if stalled else "Progressing", message)
        seen = any(
            a.get("type") == "Stalled" and a.get("step") == status.get("step") for a in status.get("alerts") or []
        )
        if stalled and not seen:
            alert = Alert("Stalled", "critical", message, status.get("step"), self.now)
            status["alerts"] = [*(status.get("alerts") or []), alert.to_json()][-MAX_ALERTS:]
        return limit - quiet + DEADLINE_SLACK if quiet is not None and not stalled else None

    def alerting(self) -> None:
        newest = (self.status.get("alerts") or [{}])[-1]
        self.condition(
            "Alerting", bool(self.status.get("alerts")), newest.get("type", "NoAlerts"), newest.get("message", "")
        )


# --- reconcile --------------------------------------------------------------------------------------


def reconcile(
    body: dict[str, Any], run: TrainingRun, observed: Observed, ctx: Context, status: Status, now: datetime
) -> Outcome:
    """Wait for every DataSource, then for the weights spec.init starts from; then own the children and
    read the trainer Job, its pods and the report."""
    total = run.spec.training.max_steps
    status.steps(total)
    status.mixture(run)
    init_weights.check(run, ctx)
    namespace = body["metadata"]["namespace"]
    sources = _ready_sources(run, namespace, observed, status)
    if sources is None:
        return Outcome()
    job = observed.children.get(("Job", naming.train_job(run.name)))
    start = None
    if run.spec.init is not None:
        started = job is not None or bool(status.status.get("startTime"))
        start = init_weights.resolve(run, namespace, observed, ctx, status, started)
        if start is None:
            return Outcome()
    built = build(body, run, sources, start, ctx)
    wanted = children.objects(built)
    if jobs.stale(job, built.job):
        status.waiting_for(
            "SpecChanged", "the spec changed: the trainer Job is replaced and resumes from the latest checkpoint"
        )
        return Outcome([obj for obj in wanted if obj is not built.job], [job])
    nodes = run.spec.resources.nodes
    gpu_resource = run.spec.resources.gpu_resource_name
    state = jobs.job_status(status, job, observed.pods, nodes, "training", gpu_resource, observed.events)
    status.progress(ProgressReport.from_json(observed.progress), total)
    if state == "Complete":
        status.finished(total)
    status.restarts(job, jobs.job_pods(job, observed.pods), nodes, state)
    status.suspension(run, state == "Suspended", ctx)
    if state == "Complete":
        status.status.pop("eta", None)
        status.phase("Succeeded", "Trained", status.summary())
    elif state == "Running":
        status.status["message"] = status.summary()
    deletions, pending_due = _pending_timeout(run, job, state, status, now)
    stall_due = status.stall(run.spec.alerts.stall_seconds, state == "Running")
    status.alerting()
    recheck = jobs.recheck_missing_pods(job, observed.pods, ctx)
    return Outcome(wanted, deletions, sooner(pending_due, stall_due, recheck))


def _ready_sources(
    run: TrainingRun, namespace: str, observed: Observed, status: Status
) -> list[tuple[DataSource, str]] | None:
    """Each DataSource of the run's data with its namespace once all are Ready; None while one is not
    (the status and condition DataReady name the first)."""
    sources = []
    for name, _ in run.spec.mixture():
        found = datasource.ready(observed, name, status, None)
        if found is None:
            status.condition("DataReady", False, "WaitingForDataSource", f"DataSource {name} is not ready")
            return None
        sources.append((parsed.model(DataSource, found), found["metadata"].get("namespace") or namespace))
    status.condition("DataReady", True, "DataSourceReady")
    return sources


def _pending_timeout(
    run: TrainingRun, job: dict[str, Any] | None, state: str, status: Status, now: datetime
) -> tuple[list[dict[str, Any]], float | None]:
    """Fail the run (and delete its Job) when its pods never all ran within pendingTimeoutSeconds;
    otherwise the seconds until that would fall due."""
    timeout = run.spec.pending_timeout_seconds
    started = parse_time(
        ((job or {}).get("status") or {}).get("startTime") or (job or {}).get("metadata", {}).get("creationTimestamp")
    )
    never_ran = state == "Starting" and not status.status.get("startTime") and started is not None
    if not timeout or not never_ran:
        return [], None
    waited = (now - started).total_seconds()
    if waited <= timeout:
        return [], timeout - waited + DEADLINE_SLACK
    cause = status.status.get("message", "")
    status.fail(
        Finding(
            "PendingTimeout",
            f"pods were not all running after pendingTimeoutSeconds ({timeout} s): {cause}",
            permanent=True,
        )
    )
    return [job], None

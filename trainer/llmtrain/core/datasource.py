"""A DataSource: its children (spec ConfigMap, and the ingest Job, or with workers > 1 one Job per ingest
stage), its status (stage, stats, where the tokenizer and shards are), and the reconcile that ties them
together. A DataSource depends on nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from ..api import DataSource
from . import children, diagnosis, jobs, naming, pods, uris
from .conditions import is_true
from .context import Context
from .plan import ChildKey, Observed, Outcome
from .progress import format_eta
from .status import StatusBuilder, parse_time

KIND = "DataSource"
#: The ingest report's figures the status keeps (`status.stats`).
STATS_FIELDS = (
    "inputs",
    "documentsIn",
    "documentsOut",
    "bytesIn",
    "rejected",
    "repaired",
    "duplicatesExact",
    "duplicatesNear",
    "dedupPercent",
    "tokensTrain",
    "tokensValidation",
)


#: The ingest stages (`data/pipeline.py`) as Jobs: (stage, status name, Indexed with `workers` pods).
STAGES = (
    ("scan", "Scan", True),
    ("dedup", "Dedup", True),
    ("cluster", "Cluster", False),
    ("tokenizer", "Tokenizer", False),
    ("encode", "Encode", True),
    ("manifest", "Manifest", False),
)


def _stage_job(stage: str) -> dict[str, Any]:
    """A later stage's Job as a child: optional, named `<name>-<stage>`."""
    return children.child("Job", partial(naming.stage_job, stage=stage))


@dataclass
class Children:
    """The spec ConfigMap and the ingest Job: the whole ingest in one pod, or with workers > 1 the scan
    stage (Indexed, `workers` pods), followed by one Job per later stage, each created when the one
    before it is complete."""

    spec: dict[str, Any] = field(metadata=children.child("ConfigMap", partial(naming.spec_configmap, KIND)))
    ingest: dict[str, Any] = field(metadata=children.child("Job", naming.ingest_job))
    dedup: dict[str, Any] | None = field(default=None, metadata=_stage_job("dedup"))
    cluster: dict[str, Any] | None = field(default=None, metadata=_stage_job("cluster"))
    tokenizer: dict[str, Any] | None = field(default=None, metadata=_stage_job("tokenizer"))
    encode: dict[str, Any] | None = field(default=None, metadata=_stage_job("encode"))
    manifest: dict[str, Any] | None = field(default=None, metadata=_stage_job("manifest"))

    def sequence(self, workers: int) -> list[tuple[dict[str, Any], int, str, str]]:
        """The Jobs in the order they run: (Job, expected pods, what it does, status stage name)."""
        if self.dedup is None:
            return [(self.ingest, 1, "ingest", "Ingest")]
        jobs = [self.ingest, self.dedup, self.cluster, self.tokenizer, self.encode, self.manifest]
        return [
            (job, workers if indexed else 1, f"ingest {stage}", name)
            for job, (stage, name, indexed) in zip(jobs, STAGES, strict=True)
            if job is not None
        ]


def child_keys(body: dict[str, Any]) -> list[ChildKey]:
    return children.child_keys(Children, body["metadata"]["name"])


def dependency_keys(body: dict[str, Any], found: dict[ChildKey, dict[str, Any]] | None = None) -> list[ChildKey]:
    """The DataSource whose tokenizer this one uses (`tokenizer.fromDataSourceRef`), if any."""
    ref = ((body.get("spec") or {}).get("tokenizer") or {}).get("fromDataSourceRef") or {}
    return [(KIND, ref["name"])] if ref.get("name") else []


def with_shared_tokenizer(source: DataSource, observed: Observed, status: StatusBuilder) -> DataSource | None:
    """The DataSource with `tokenizer.fromDataSourceRef` resolved to that DataSource's tokenizer URI
    (`tokenizer.from`), once it is Ready; None while it waits (the status says for what)."""
    ref = source.spec.tokenizer.from_data_source_ref
    if ref is None:
        return source
    if ref.name == source.name:
        raise uris.PlacementError("spec.tokenizer.fromDataSourceRef", "a DataSource cannot use its own tokenizer")
    found = ready(observed, ref.name, status, None)
    if found is None:
        return None
    uri = (found.get("status") or {}).get("tokenizerUri")
    if not isinstance(uri, str) or not uri:
        status.waiting_for("WaitingForDataSource", f"DataSource {ref.name} reports no tokenizerUri yet")
        return None
    tokenizer = source.spec.tokenizer.model_copy(update={"from_uri": uri, "from_data_source_ref": None})
    return source.model_copy(update={"spec": source.spec.model_copy(update={"tokenizer": tokenizer})})


#: The status fields that follow a running stage (cleared once the DataSource is ingested).
STAGE_FIELDS = ("stage", "progress", "documentsPerSecond", "eta")


class Status(StatusBuilder):
    SUMMARY = "Ready"

    def stage(self, name: str, job: dict[str, Any] | None, pods: list[dict[str, Any]], parts: int) -> None:
        """The running stage (`STAGES`): its tasks done of total, the documents per second its finished
        tasks processed, and when its last task should be done at that pace."""
        for key in STAGE_FIELDS:
            self.status.pop(key, None)
        if job is None:
            return
        done = min(parts, int((job.get("status") or {}).get("succeeded") or 0))
        self.status["stage"], self.status["progress"] = name, f"{done}/{parts}"
        started = parse_time((job.get("status") or {}).get("startTime"))
        elapsed = (self.moment - started).total_seconds() if started is not None else 0.0
        if done and elapsed > 0:
            documents = sum(_documents_read(pod) for pod in jobs.job_pods(job, pods))
            if documents:
                self.status["documentsPerSecond"] = int(documents / elapsed)
            if done < parts:
                self.status["eta"] = format_eta(elapsed / done * (parts - done))

    def ingested(self, report: dict[str, Any], output: str) -> None:
        """Succeeded: the ingest report's stats, where the shards and the tokenizer are."""
        stats = report.get("stats") or {}
        stats = {k: stats[k] for k in STATS_FIELDS if k in stats}
        self.status["stats"] = stats or self.status.get("stats") or {}
        self.status["shardsUri"] = output
        self.status["tokenizerUri"] = report.get("tokenizer") or f"{output.rstrip('/')}/tokenizer"
        for key in STAGE_FIELDS:
            self.status.pop(key, None)
        docs, tokens = stats.get("documentsOut"), stats.get("tokensTrain")
        self.phase("Succeeded", "Ingested", f"{docs} documents, {tokens} training tokens at {output}")


def build(body: dict[str, Any], source: DataSource, ctx: Context) -> Children:
    """The spec ConfigMap and the ingest Job; with workers > 1, the scan Job and one Job per later stage
    (the reconcile creates each once the one before it is complete)."""
    namespace = body["metadata"]["namespace"]
    uris.check_sources(source, ctx)
    output = uris.dataset_uri(source, namespace, ctx)
    labels = naming.labels(KIND, source.name, "ingest")
    configmap = children.spec_configmap(body, [children.document(source, namespace)], labels, ctx)
    claims = sorted(set(uris.source_claims(source)) | set(uris.claims([output])))
    controls = source.spec.pod
    secrets = uris.secret_names(source)
    vols, mounts = pods.volumes(configmap["metadata"]["name"], claims, secrets, shm_size=controls.shm_size)
    queue = children.kueue_labels(source.spec.queue_name, source.spec.workload_priority_class_name, ctx)
    base = ["ingest", "-f", f"{pods.SPEC_DIR}/{naming.SPEC_KEY}", "--name", source.name, "--output", output]
    if ctx.local and ctx.base_dir:
        base += ["--base-dir", ctx.base_dir]

    def ingest_job(
        name: str, args: list[str], completions: int, env_extra: list[dict[str, Any]], stage: str | None = None
    ) -> dict:
        amounts = _resources(source, stage)
        env = pods.env(ctx, pods.ingest_env(ctx)) + env_extra + pods.user_env(controls)
        container = pods.container("ingest", ctx, source.spec.image, ["llmtrain"], args, env, mounts, amounts)
        placement = pods.scheduling(controls, source.spec.resources)
        spec = pods.pod_spec([container], vols, grace_seconds=60, extra=placement)
        return children.job(
            body,
            name,
            labels,
            spec,
            ctx,
            container="ingest",
            completions=completions,
            backoff_limit=3 * completions,
            suspend=bool(queue),
            job_labels=queue or None,
            inputs=configmap["data"],
            pod_labels=controls.labels,
            pod_annotations=controls.annotations,
        )

    workers = source.spec.workers
    if workers == 1:
        return Children(configmap, ingest_job(naming.ingest_job(source.name), base, 1, []))
    stages = {}
    for stage, _, indexed in STAGES:
        args = [*base, "--stage", stage, "--shard-count", str(workers)]
        name = naming.ingest_job(source.name) if stage == "scan" else naming.stage_job(source.name, stage)
        if indexed:
            args[-2:-2] = ["--shard-index", children.JOB_INDEX]
        stages[stage] = ingest_job(
            name, args, workers if indexed else 1, [children.INDEX_ENV] if indexed else [], stage
        )
    return Children(configmap, stages.pop("scan"), **stages)


def _resources(source: DataSource, stage: str | None) -> dict[str, Any]:
    """A stage's pods' CPU and memory: `stageResources.<stage>`, each unset field from `resources`; the
    extended resources of `spec.pod`."""
    default = source.spec.resources
    own = getattr(source.spec.stage_resources, stage) if stage else None
    cpu = own.cpu if own is not None and own.cpu is not None else default.cpu
    memory = own.memory if own is not None and own.memory is not None else default.memory
    return pods.resources(cpu, memory, pods.extended_resources(source.spec.pod))


def reconcile(
    body: dict[str, Any], source: DataSource, observed: Observed, ctx: Context, status: Status, now: datetime
) -> Outcome:
    """The ingest Job, or the stage Jobs one after another (workers > 1); Succeeded with the stats once
    the last Job completes."""
    resolved = with_shared_tokenizer(source, observed, status)
    if resolved is None:
        return Outcome()
    built = build(body, resolved, ctx)
    sequence = built.sequence(source.spec.workers)
    desired, deletions, state = jobs.run_in_turn(
        status, [(job, pods, what) for job, pods, what, _ in sequence], observed
    )
    if state == "Suspended":
        jobs.queued(status, source.spec.queue_name)
    latest = observed.children.get(("Job", desired[-1]["metadata"]["name"])) if desired else None
    if desired and state in ("Running", "Starting") and len(sequence) > 1:
        current, tasks, _, stage = sequence[len(desired) - 1]
        status.stage(stage, observed.children.get(("Job", current["metadata"]["name"])), observed.pods, tasks)
    if state == "Complete":
        last = observed.children.get(("Job", sequence[-1][0]["metadata"]["name"]))
        report = jobs.final_report(last, observed.pods) or {}
        status.ingested(report, uris.dataset_uri(source, body["metadata"]["namespace"], ctx))
    return Outcome([built.spec, *desired], deletions, jobs.recheck_missing_pods(latest, observed.pods, ctx))


def ready(observed: Observed, name: str, status: StatusBuilder, condition: str | None) -> dict[str, Any] | None:
    """The DataSource a TrainingRun or ModelExport reads, when it is Ready; otherwise says on the
    dependent's status what it waits for and returns None. `condition` (DataReady) mirrors readiness."""
    found = observed.dependencies.get((KIND, name))
    found_status = (found or {}).get("status") or {}
    is_ready = found is not None and is_true(found_status.get("conditions"), "Ready")
    if condition:
        status.condition(
            condition,
            is_ready,
            "DataSourceReady" if is_ready else "WaitingForDataSource",
            "" if is_ready else f"DataSource {name} is not ready",
        )
    if is_ready:
        return found
    if found is None:
        status.waiting_for("WaitingForDataSource", f"DataSource {name} does not exist yet")
    elif found_status.get("phase") == "Failed":
        status.waiting_for("DataSourceFailed", f"DataSource {name} failed: {found_status.get('message', '')}")
    else:
        phase = found_status.get("phase") or "new"
        status.waiting_for("WaitingForDataSource", f"waiting for DataSource {name} ({phase})")
    return None


def _documents_read(pod: dict[str, Any]) -> int:
    """Documents a succeeded scan part read, from the report in its termination message."""
    if (pod.get("status") or {}).get("phase") != "Succeeded":
        return 0
    for container in pod["status"].get("containerStatuses") or []:
        report = diagnosis.termination_report((container.get("state") or {}).get("terminated") or {})
        documents = ((report or {}).get("stats") or {}).get("documentsIn")
        if isinstance(documents, int) and not isinstance(documents, bool):
            return documents
    return 0

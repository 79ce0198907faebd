"""A DataSource: its ingest and merge Jobs, its sources' Secrets and claims, what a cluster refuses."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

from llmtrain.api.manifests import read_documents
from llmtrain.core import Observed
from llmtrain.core.datasource import STAGE_FIELDS
from llmtrain.core.status import iso
from support.paths import ROOT
from support.plans import desired_job, plan_objects, pod, reconcile, terminated
from support.resources import NOW, stored

VERSIONS = ["1.29", "1.35"]


STAGE_JOBS = [
    ("shakespeare-ingest", "scan", 4),
    ("shakespeare-dedup", "dedup", 4),
    ("shakespeare-cluster", "cluster", 1),
    ("shakespeare-tokenizer", "tokenizer", 1),
    ("shakespeare-encode", "encode", 4),
    ("shakespeare-manifest", "manifest", 1),
]


def _complete(job):
    done = copy.deepcopy(job)
    done["metadata"]["uid"] = f"{job['metadata']['name']}-uid"
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    return done


def test_workers_make_one_job_per_stage_each_after_the_one_before(bodies, cluster):
    """workers > 1: scan, dedup and encode are Indexed Jobs of `workers` pods (one task each), cluster,
    tokenizer and manifest one pod; each Job is created once the one before it is complete."""
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"]["workers"] = 4
    finished = {}
    for name, stage, tasks in STAGE_JOBS:
        jobs = [o for o in plan_objects(ds, cluster, children=dict(finished)) if o["kind"] == "Job"]
        assert [j["metadata"]["name"] for j in jobs] == [name]  # the ones before it are complete
        job = jobs[0]
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == tasks
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        if tasks > 1:
            assert job["spec"]["completionMode"] == "Indexed"
            assert args[-6:] == ["--stage", stage, "--shard-index", "$(JOB_COMPLETION_INDEX)", "--shard-count", "4"]
        else:
            assert args[-4:] == ["--stage", stage, "--shard-count", "4"]
        finished[("Job", name)] = _complete(job)
    assert [o for o in plan_objects(ds, cluster, children=finished) if o["kind"] == "Job"] == []  # all done


def test_source_secrets_are_mounted_files_never_values(bodies, cluster):
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"]["sources"] = [
        {"s3": {"bucket": "corpus", "credentialsSecret": {"name": "s3-creds"}}},
        {"sql": {"urlSecret": {"name": "db", "key": "url"}, "query": "select text from t"}},
    ]
    job = next(o for o in plan_objects(ds, cluster) if o["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"s3-creds", "db"}
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/var/run/secrets/llmtrain/s3-creds", "/var/run/secrets/llmtrain/db"} <= mounts


def test_local_paths_are_refused_in_a_cluster_with_the_field(bodies, cluster):

    ds = stored(read_documents(ROOT / "examples" / "run.yaml")[0], 9)
    plan = reconcile(ds, Observed(), cluster, NOW)
    assert plan.actions == []
    assert plan.status["phase"] == "Failed" and plan.status["failure"]["reason"] == "InvalidSpec"
    assert "spec.sources[0].local" in plan.status["message"]


def test_a_running_datasource_shows_its_stage_parts_rate_and_eta(bodies, cluster):
    """Scan: parts done of total from the Job, documents per second from the finished parts' reports,
    an ETA at that pace, an Event as each stage begins; all of it cleared once ingested."""
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"]["workers"] = 4
    job = desired_job(ds, cluster)
    job["status"] = {"startTime": iso(NOW - timedelta(seconds=100)), "succeeded": 2, "active": 2}
    report = json.dumps({"name": "shakespeare", "part": "p", "stats": {"documentsIn": 500}})
    pods = [pod(job, i, phase="Succeeded", **terminated(0, "Completed", report)) for i in (0, 1)]
    pods += [pod(job, i) for i in (2, 3)]
    scan = reconcile(ds, Observed(children={("Job", "shakespeare-ingest"): job}, pods=pods), cluster, NOW)
    figures = {k: scan.status.get(k) for k in ("phase", "stage", "progress", "documentsPerSecond", "eta")}
    assert figures == {"phase": "Running", "stage": "Scan", "progress": "2/4", "documentsPerSecond": 10, "eta": "1m40s"}
    assert ("ScanStarted", "Scan stage: 4 part(s)") in [(e.reason, e.message) for e in scan.events]

    done = copy.deepcopy(job)
    done["status"] = {"succeeded": 4, "conditions": [{"type": "Complete", "status": "True"}]}
    running = {**copy.deepcopy(ds), "status": scan.status}
    finished = {("Job", "shakespeare-ingest"): done}
    dedup_job = desired_job(running, cluster, children=dict(finished), name="shakespeare-dedup")
    deduping = Observed(children={**finished, ("Job", "shakespeare-dedup"): dedup_job}, pods=[pod(dedup_job, 0)])
    dedup = reconcile(running, deduping, cluster, NOW)
    assert (dedup.status["stage"], dedup.status["progress"]) == ("Dedup", "0/4") and "eta" not in dedup.status
    assert ("DedupStarted", "Dedup stage: 4 part(s)") in [(e.reason, e.message) for e in dedup.events]

    for name, _, _ in STAGE_JOBS[1:-1]:
        finished[("Job", name)] = _complete(desired_job(running, cluster, children=dict(finished), name=name))
    manifest_job = desired_job(running, cluster, children=dict(finished), name="shakespeare-manifest")
    manifest_job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    final = {"stats": {"documentsOut": 12, "tokensTrain": 425450}}
    last = Observed(
        children={**finished, ("Job", "shakespeare-manifest"): manifest_job},
        pods=[pod(manifest_job, 0, phase="Succeeded", **terminated(0, "Completed", json.dumps(final)))],
    )
    ingested = reconcile({**running, "status": dedup.status}, last, cluster, NOW).status
    assert ingested["phase"] == "Succeeded" and not set(STAGE_FIELDS) & set(ingested)


def test_a_shared_tokenizer_waits_for_its_datasource_then_reads_its_tokenizer_uri(bodies, cluster):
    """tokenizer.fromDataSourceRef: nothing runs until that DataSource is Ready; then the ingest reads the
    tokenizer it reports (its claim mounted), as `tokenizer.from` would."""
    books = copy.deepcopy(bodies["DataSource"])
    books["metadata"]["name"] = "books"
    books["spec"]["tokenizer"]["fromDataSourceRef"] = {"name": "shakespeare"}
    waiting = reconcile(books, Observed(), cluster, NOW)
    assert waiting.actions == [] and waiting.status["phase"] == "Pending"
    assert "DataSource shakespeare does not exist yet" in waiting.status["message"]
    shared = "pvc://shared/team-a/datasources/shakespeare/tokenizer"
    other = {**bodies["DataSource"], "status": {"phase": "Succeeded", "tokenizerUri": shared}}
    other["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    created = plan_objects(books, cluster, dependencies={("DataSource", "shakespeare"): other})
    (configmap,) = [o for o in created if o["kind"] == "ConfigMap"]
    document = next(iter(configmap["data"].values()))
    assert f"from: {shared}" in document and "fromDataSourceRef" not in document
    (job,) = [o for o in created if o["kind"] == "Job"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert "shared" in claims


def test_a_datasource_cannot_share_its_own_tokenizer(bodies, cluster):
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"]["tokenizer"]["fromDataSourceRef"] = {"name": "shakespeare"}
    plan = reconcile(ds, Observed(), cluster, NOW)
    assert plan.status["phase"] == "Failed" and "spec.tokenizer.fromDataSourceRef" in plan.status["message"]


def test_each_stage_gets_its_own_resources_falling_back_to_resources(bodies, cluster):
    """stageResources: the tokenizer pod sized for its sample, encode pods with more CPU; any field a stage
    leaves unset (and every field of the other stages) is `resources`'. It changes no output."""
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"].update(workers=4, resources={"cpu": "1", "memory": "1Gi"})
    ds["spec"]["stageResources"] = {"tokenizer": {"memory": "4Gi"}, "encode": {"cpu": "4", "memory": "2Gi"}}
    finished, limits = {}, {}
    for name, _, _ in STAGE_JOBS:
        (job,) = [o for o in plan_objects(ds, cluster, children=dict(finished)) if o["kind"] == "Job"]
        limits[name.rsplit("-", 1)[1]] = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        finished[("Job", name)] = _complete(job)
    assert limits["tokenizer"] == {"cpu": "1", "memory": "4Gi"} and limits["encode"] == {"cpu": "4", "memory": "2Gi"}
    assert limits["ingest"] == limits["dedup"] == limits["cluster"] == {"cpu": "1", "memory": "1Gi"}

    from llmtrain.api import DataSource
    from llmtrain.data.layout import spec_hash

    plain = copy.deepcopy(ds)
    del plain["spec"]["stageResources"]
    assert spec_hash(DataSource.model_validate(ds).spec) == spec_hash(DataSource.model_validate(plain).spec)

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


def test_workers_make_an_indexed_ingest_job_then_a_merge(bodies, cluster):
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"]["workers"] = 4
    jobs = [o for o in plan_objects(ds, cluster) if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == ["shakespeare-ingest"]  # the merge waits for the parts
    ingest = jobs[0]["spec"]
    assert ingest["completions"] == ingest["parallelism"] == 4 and ingest["completionMode"] == "Indexed"
    args = ingest["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--shard-index", "$(JOB_COMPLETION_INDEX)", "--shard-count", "4"]
    done = copy.deepcopy(jobs[0])
    done["metadata"]["uid"] = "job-uid"
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    later = plan_objects(ds, cluster, children={("Job", "shakespeare-ingest"): done})
    merge = [o for o in later if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in merge] == ["shakespeare-merge"]
    assert merge[0]["spec"]["template"]["spec"]["containers"][0]["args"][-3:] == ["--merge", "--shard-count", "4"]


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
    merge_job = desired_job(running, cluster, children={("Job", "shakespeare-ingest"): done}, name="shakespeare-merge")
    merging = Observed(
        children={("Job", "shakespeare-ingest"): done, ("Job", "shakespeare-merge"): merge_job},
        pods=[pod(merge_job, 0)],
    )
    merge = reconcile(running, merging, cluster, NOW)
    assert (merge.status["stage"], merge.status["progress"]) == ("Merge", "0/1") and "eta" not in merge.status
    assert "MergeStarted" in [e.reason for e in merge.events]

    merge_job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    final = {"stats": {"documentsOut": 12, "tokensTrain": 425450}}
    merging.pods = [pod(merge_job, 0, phase="Succeeded", **terminated(0, "Completed", json.dumps(final)))]
    ingested = reconcile({**running, "status": merge.status}, merging, cluster, NOW).status
    assert ingested["phase"] == "Succeeded" and not set(STAGE_FIELDS) & set(ingested)

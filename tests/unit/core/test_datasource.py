"""A DataSource: its ingest and merge Jobs, its sources' Secrets and claims, what a cluster refuses."""

from __future__ import annotations

import copy

from llmtrain.api.manifests import read_documents
from llmtrain.core import Observed
from support.paths import ROOT
from support.plans import plan_objects, reconcile
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

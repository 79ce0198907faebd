"""The generic plan and diff: labels put back, terminal reports read, the status throttle's fields."""

from __future__ import annotations

import copy
import json

from llmtrain.core import Observed
from llmtrain.core.conditions import get_condition
from llmtrain.core.status import progress_only
from support.plans import desired_job, pod, reconcile, terminated
from support.resources import NOW, ready

VERSIONS = ["1.29", "1.35"]


def test_children_that_lost_the_operators_labels_get_them_back(bodies, cluster):
    """The operator finds its children by their labels (its watches select on them): a label removed or
    changed is put back, data left alone; labels others added are no drift."""
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    body = bodies["TrainingRun"]
    created = [a.object for a in reconcile(body, Observed(dependencies=deps), cluster, NOW).actions]
    children = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in created}
    for child in children.values():
        child["metadata"]["labels"]["argocd.argoproj.io/instance"] = "someone-elses"
    plan = reconcile(body, Observed(children=copy.deepcopy(children), dependencies=deps), cluster, NOW)
    assert plan.actions == []
    managed = "app.kubernetes.io/managed-by"
    for child in children.values():
        del child["metadata"]["labels"][managed]
    plan = reconcile(body, Observed(children=children, dependencies=deps), cluster, NOW)
    verbs = {a.key: (a.verb, a.patch) for a in plan.actions}
    assert verbs.pop(("Job", "tiny-llama-train")) == ("patch", {"metadata": {"labels": {managed: "llmtrain-operator"}}})
    assert verbs.pop(("ConfigMap", "tiny-llama-progress")) == (
        "patch",
        {"metadata": {"labels": {managed: "llmtrain-operator"}}},
    )  # the trainer's data is not overwritten
    replaced = [("ConfigMap", "tiny-llama-train-spec"), ("ServiceAccount", "tiny-llama-trainer")]
    replaced += [("Role", "tiny-llama-trainer"), ("RoleBinding", "tiny-llama-trainer"), ("Service", "tiny-llama-train")]
    assert verbs == dict.fromkeys(replaced, ("update", None))


def test_datasource_and_export_success_read_the_termination_report(bodies, cluster):
    ds = bodies["DataSource"]
    job = desired_job(ds, cluster)
    job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    report = {
        "stats": {"documentsOut": 12, "tokensTrain": 425450, "dedupPercent": 0.0, "seconds": {"scan": 1}},
        "tokenizer": "s3://models/llmtrain/team-a/datasources/shakespeare/tokenizer",
    }
    done = pod(job, phase="Succeeded", **terminated(0, "Completed", json.dumps(report)))
    plan = reconcile(ds, Observed(children={("Job", "shakespeare-ingest"): job}, pods=[done]), cluster, NOW)
    status = plan.status
    assert status["phase"] == "Succeeded" and status["stats"] == {
        "documentsOut": 12,
        "tokensTrain": 425450,
        "dedupPercent": 0.0,
    }
    assert get_condition(status["conditions"], "Ready")["status"] == "True"
    assert status["shardsUri"] == "s3://models/llmtrain/team-a/datasources/shakespeare"


def test_only_progress_figures_are_throttled():
    old = {"phase": "Running", "step": 10, "loss": 5.0, "conditions": []}
    assert progress_only(old, {**old, "step": 11, "loss": 4.9})
    assert not progress_only(old, {**old, "latestCheckpoint": {"step": 10, "uri": "x"}})
    assert not progress_only(old, {**old, "phase": "Succeeded"})

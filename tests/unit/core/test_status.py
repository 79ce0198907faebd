"""Status, conditions, failure diagnosis and Events derived from Job/pod situations."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest
import yaml

from llmtrain.api.manifests import read_documents
from llmtrain.core import Observed
from llmtrain.core import reconcile as core_reconcile
from llmtrain.core.conditions import get_condition
from llmtrain.core.status import progress_only
from support.apiserver import admit
from support.paths import ROOT
from support.resources import EXAMPLES, NOW, ready, stored

CRDS = {d["spec"]["names"]["kind"]: d for d in (yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob("*.yaml"))}


def reconcile(body, observed, ctx, now):
    """The core's plan, with its status checked against the CRD as the API server would (no drift)."""
    plan = core_reconcile(body, observed, ctx, now)
    errors = admit(CRDS[body["kind"]], {**body, "status": plan.status})
    assert errors == [], errors
    return plan


def desired_job(body, ctx, deps=None):
    plan = reconcile(body, Observed(dependencies=deps or {}), ctx, NOW)
    job = copy.deepcopy(next(a.object for a in plan.actions if a.object["kind"] == "Job"))
    job["metadata"].update(uid="job-uid", creationTimestamp="2026-11-26T11:50:00Z")
    job["status"] = {"startTime": "2026-11-26T11:50:00Z"}
    return job


def pod(job, index=0, phase="Running", **status):
    return {
        "metadata": {
            "name": f"{job['metadata']['name']}-{index}-abcde",
            "labels": {
                "batch.kubernetes.io/job-name": job["metadata"]["name"],
                "batch.kubernetes.io/controller-uid": "job-uid",
            },
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "creationTimestamp": "2026-11-26T11:51:00Z",
        },
        "status": {"phase": phase, **status},
    }


def terminated(code, reason="Error", message=None):
    state = {"exitCode": code, "reason": reason, "finishedAt": "2026-11-26T11:55:00Z"}
    if message is not None:
        state["message"] = message
    return {"containerStatuses": [{"name": "trainer", "state": {"terminated": state}}]}


def failed(job, reason):
    job = copy.deepcopy(job)
    job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": reason}]
    return job


@pytest.fixture
def run_world(bodies, cluster):
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    job = desired_job(bodies["TrainingRun"], cluster, deps)

    def observe(job=job, pods=(), progress=None, body=None):
        obs = Observed(
            children={("Job", job["metadata"]["name"]): job}, pods=list(pods), dependencies=deps, progress=progress
        )
        return reconcile(body or bodies["TrainingRun"], obs, cluster, NOW)

    return job, observe


def test_trainingrun_waits_for_its_datasource(bodies, cluster):
    plan = reconcile(bodies["TrainingRun"], Observed(), cluster, NOW)
    assert plan.actions == [] and plan.status["phase"] == "Pending"
    assert get_condition(plan.status["conditions"], "Succeeded")["reason"] == "WaitingForDataSource"
    assert get_condition(plan.status["conditions"], "DataReady")["status"] == "False"
    assert plan.status["observedGeneration"] == 1


def test_running_with_progress_report(run_world):
    job, observe = run_world
    report = {
        "version": 1,
        "step": 120,
        "totalSteps": 300,
        "loss": 5.91,
        "valLoss": 6.02,
        "perplexity": 411.6,
        "tokensPerSecond": 5700.4,
        "mfu": 0.31,
        "eta": "0m32s",
        "tokensSeen": 245760,
        "latestCheckpoint": {"step": 100, "uri": "s3://m/step-100", "time": "2026-11-26T11:58:00Z"},
        "bestCheckpoint": {"step": 100, "valLoss": 6.02, "uri": "s3://m/step-100"},
        "alerts": [{"type": "LossSpike", "severity": "warning", "message": "loss 9 > 3x mean", "step": 87}],
    }
    plan = observe(pods=[pod(job)], progress=report)
    status = plan.status
    assert status["phase"] == "Running" and status["progress"] == "120/300" and status["tokensPerSecond"] == 5700
    assert status["latestCheckpoint"] == {"step": 100, "uri": "s3://m/step-100", "time": "2026-11-26T11:58:00Z"}
    assert status["bestCheckpoint"]["valLoss"] == 6.02 and status["eta"] == "0m32s"
    assert get_condition(status["conditions"], "Alerting")["reason"] == "LossSpike"
    reasons = [e.reason for e in plan.events]
    assert reasons == ["Running", "CheckpointSaved", "LossSpike"]
    assert "step 120/300" in status["message"]


@pytest.mark.parametrize(
    ("code", "reason", "message", "expected", "words"),
    [
        (2, "Error", json.dumps({"error": "spec.model: vocab mismatch", "exitCode": 2}), "BadInput", "vocab mismatch"),
        (3, "Error", json.dumps({"exitCode": 3, "error": "the loss became non-finite"}), "NonFiniteLoss", "diverged"),
        (137, "OOMKilled", None, "OOMKilled", "spec.resources.memory"),
        (1, "Error", json.dumps({"error": "RuntimeError: no CUDA GPUs are available"}), "NoGPU", "device plugin"),
    ],
)
def test_failure_names_pod_rank_and_cause(run_world, code, reason, message, expected, words):
    job, observe = run_world
    bad = pod(job, index=1, phase="Failed", **terminated(code, reason, message))
    plan = observe(job=failed(job, "PodFailurePolicy"), pods=[pod(job, phase="Failed", **terminated(143)), bad])
    failure = plan.status["failure"]
    if code in (2, 3):
        assert failure["pod"] == "tiny-llama-train-1-abcde" and failure["rank"] == 1  # the permanent one wins
    assert failure["reason"] == expected and words in failure["message"]
    assert plan.status["phase"] == "Failed"
    assert get_condition(plan.status["conditions"], "Failed")["status"] == "True"
    assert plan.events[0].type == "Warning"


def test_restarts_exhausted_and_deadline(run_world):
    job, observe = run_world
    job_failed = failed(job, "BackoffLimitExceeded")
    job_failed["status"]["failed"] = 4
    plan = observe(job=job_failed, pods=[pod(job, phase="Failed", **terminated(75, message='{"exitCode":75}'))])
    assert plan.status["failure"]["reason"] == "RestartsExhausted" and plan.status["restarts"] == 3
    plan = observe(job=failed(job, "DeadlineExceeded"))
    assert plan.status["failure"]["reason"] == "DeadlineExceeded"


def test_waiting_pods_say_why(run_world):
    job, observe = run_world
    unschedulable = pod(
        job,
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    plan = observe(pods=[unschedulable])
    assert plan.status["phase"] == "Pending" and "3 Insufficient nvidia.com/gpu" in plan.status["message"]
    assert get_condition(plan.status["conditions"], "Succeeded")["reason"] == "Unschedulable"
    pulling = pod(
        job,
        phase="Pending",
        containerStatuses=[
            {"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}
        ],
    )
    plan = observe(pods=[pulling])
    assert "cannot be pulled" in plan.status["message"] and plan.events[0].type == "Warning"


def test_pending_timeout_fails_and_removes_the_job(run_world, bodies):
    job, observe = run_world
    body = copy.deepcopy(bodies["TrainingRun"])
    body["spec"]["pendingTimeoutSeconds"] = 300  # the Job started 10 minutes before NOW
    plan = observe(pods=[pod(job, phase="Pending")], body=body)
    assert plan.status["failure"]["reason"] == "PendingTimeout"
    assert [a.key for a in plan.actions if a.verb == "delete"] == [("Job", "tiny-llama-train")]


def test_suspend_and_kueue_queue(run_world, bodies):
    job, observe = run_world
    body = copy.deepcopy(bodies["TrainingRun"])
    body["spec"]["queueName"] = "research"
    queued = copy.deepcopy(job)
    queued["spec"]["suspend"] = True
    plan = observe(job=queued, body=body)
    assert plan.status["phase"] == "Suspended"
    assert get_condition(plan.status["conditions"], "Suspended")["reason"] == "Queued"
    assert not [a for a in plan.actions if a.verb == "patch"]  # Kueue, not the operator, unsuspends
    admitted = copy.deepcopy(queued)
    admitted["spec"]["suspend"] = False  # Kueue admitted it: the operator leaves it running
    plan = observe(job=admitted, body=body, pods=[pod(job)])
    assert plan.status["phase"] == "Running" and not [a for a in plan.actions if a.verb == "patch"]
    body["spec"]["suspend"] = True
    plan = observe(job=job, body=body, pods=[pod(job)])
    assert [(a.verb, a.patch) for a in plan.actions if a.verb == "patch"] == [("patch", {"spec": {"suspend": True}})]


def test_spec_change_replaces_the_job_and_finished_runs_stay_finished(run_world, bodies, cluster):
    job, observe = run_world
    body = copy.deepcopy(bodies["TrainingRun"])
    body["spec"]["training"]["maxSteps"] = 600
    body["metadata"]["generation"] = 2
    plan = observe(body=body, pods=[pod(job)])
    assert [(a.verb, a.key) for a in plan.actions if a.key[0] == "Job"] == [("delete", ("Job", "tiny-llama-train"))]
    assert get_condition(plan.status["conditions"], "Succeeded")["reason"] == "SpecChanged"
    done = copy.deepcopy(bodies["TrainingRun"])
    done["status"] = {"phase": "Succeeded", "observedGeneration": 1, "conditions": []}
    plan = reconcile(
        done, Observed(dependencies={("DataSource", "shakespeare"): ready(bodies["DataSource"])}), cluster, NOW
    )
    assert plan.actions == [] and plan.status == done["status"]  # its Job vanished (TTL): not rerun


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


def test_a_completed_trainer_ran_every_step_even_if_its_last_report_was_lost(run_world, bodies):
    job, observe = run_world
    total = bodies["TrainingRun"]["spec"]["training"]["maxSteps"]
    done = copy.deepcopy(job)
    done["status"].update(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    report = {"version": 1, "phase": "Running", "step": total - 1, "totalSteps": total}
    plan = observe(job=done, pods=[pod(job, phase="Succeeded")], progress=report)
    assert plan.status["phase"] == "Succeeded"
    assert (plan.status["step"], plan.status["progress"]) == (total, f"{total}/{total}")


def test_a_run_whose_pods_succeeded_before_the_job_completes_is_still_running(run_world, bodies):
    """Between the last pod's success and the Job controller's Complete, a freshly restarted operator saw
    no running pod and said Pending (the real control plane showed Running, Pending, Succeeded)."""
    job, observe = run_world
    total = bodies["TrainingRun"]["spec"]["training"]["maxSteps"]
    report = {"version": 1, "phase": "Running", "step": total, "totalSteps": total}
    plan = observe(pods=[pod(job, phase="Succeeded")], progress=report)
    assert plan.status["phase"] == "Running", plan.status["message"]
    assert plan.status["progress"] == f"{total}/{total}"


def test_stalled_run_raises_a_critical_alert(run_world):
    job, observe = run_world
    old = {
        "phase": "Running",
        "step": 50,
        "startTime": "2026-11-26T11:00:00Z",
        "lastProgressTime": (NOW - timedelta(seconds=400)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    plan = observe(pods=[pod(job)], progress={"version": 1, "step": 50}, body=_with_status(old))
    assert get_condition(plan.status["conditions"], "Stalled")["status"] == "True"
    assert plan.status["alerts"][-1]["type"] == "Stalled" and plan.status["alerts"][-1]["severity"] == "critical"
    assert "Stalled" in [e.reason for e in plan.events]


def _with_status(status):
    body = stored(read_documents(EXAMPLES / "run.yaml")[1], 1)
    body["status"] = status
    return body


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


def test_export_waits_for_the_run_to_finish(bodies, cluster):
    run = copy.deepcopy(bodies["TrainingRun"])
    run["status"] = {"phase": "Running", "progress": "120/300", "latestCheckpoint": {"step": 100, "uri": "x"}}
    deps = {("TrainingRun", "tiny-llama"): run, ("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    plan = reconcile(bodies["ModelExport"], Observed(dependencies=deps), cluster, NOW)
    assert plan.actions == [] and "120/300" in plan.status["message"]
    run["status"]["phase"] = "Failed"
    plan = reconcile(bodies["ModelExport"], Observed(dependencies=deps), cluster, NOW)
    assert get_condition(plan.status["conditions"], "Succeeded")["reason"] == "TrainingRunFailed"


def test_only_progress_figures_are_throttled():
    old = {"phase": "Running", "step": 10, "loss": 5.0, "conditions": []}
    assert progress_only(old, {**old, "step": 11, "loss": 4.9})
    assert not progress_only(old, {**old, "latestCheckpoint": {"step": 10, "uri": "x"}})
    assert not progress_only(old, {**old, "phase": "Succeeded"})

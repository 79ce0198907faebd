"""A TrainingRun: its children (the trainer Job, its RBAC, the grace period) and its status from the
Job, its pods and the trainer's progress report: failures, restarts, waiting, timeouts, suspension, stalls."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest

from llmtrain.core import Observed, trainingrun
from llmtrain.core.conditions import get_condition
from support.plans import failed, plan_objects, pod, reconcile, run_with_status, terminated
from support.resources import NOW, ready

VERSIONS = ["1.29", "1.35"]


def test_trainer_job_wires_torchrun_rendezvous_gpus_and_failure_policy(bodies, cluster):
    run = copy.deepcopy(bodies["TrainingRun"])
    run["spec"]["resources"].update(
        nodes=4,
        gpusPerNode=8,
        nodeSelector={"pool": "h100"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    run["spec"].update(maxRestarts=2, activeDeadlineSeconds=86400, queueName="research")
    objects = {
        (o["kind"], o["metadata"]["name"]): o
        for o in plan_objects(run, cluster, dependencies={("DataSource", "shakespeare"): ready(bodies["DataSource"])})
    }
    job = objects[("Job", "tiny-llama-train")]
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    trainer = pod["containers"][0]
    assert spec["completions"] == spec["parallelism"] == 4 and spec["completionMode"] == "Indexed"
    assert spec["backoffLimit"] == 8 and spec["activeDeadlineSeconds"] == 86400
    assert spec["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    assert trainer["command"] == ["llmtrain", "launch", "--"]
    assert "--nnodes=4" in trainer["args"] and "--nproc-per-node=8" in trainer["args"]
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in trainer["args"]
    env = {e["name"]: e for e in trainer["env"]}
    assert env["LLMTRAIN_MASTER_ADDR"]["value"] == "tiny-llama-train-0.tiny-llama-train"
    assert "job-completion-index" in env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert pod["subdomain"] == "tiny-llama-train" and pod["nodeSelector"] == {"pool": "h100"}
    assert pod["tolerations"][0]["key"] == "gpu"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    service = objects[("Service", "tiny-llama-train")]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2, 3]
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert trainer["envFrom"] == [{"secretRef": {"name": "llmtrain-storage", "optional": False}}]


def test_progress_is_writable_only_through_the_runs_own_account(bodies, cluster):
    objects = {
        (o["kind"], o["metadata"]["name"]): o
        for o in plan_objects(
            bodies["TrainingRun"], cluster, dependencies={("DataSource", "shakespeare"): ready(bodies["DataSource"])}
        )
    }
    role = objects[("Role", "tiny-llama-trainer")]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["tiny-llama-progress"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = objects[("RoleBinding", "tiny-llama-trainer")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tiny-llama-trainer", "namespace": "team-a"}]
    pod = objects[("Job", "tiny-llama-train")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tiny-llama-trainer"


def test_grace_period_covers_a_checkpoint_save(bodies):
    from llmtrain.api import DataSource, TrainingRun

    run = TrainingRun.model_validate(bodies["TrainingRun"])
    source = DataSource.model_validate(bodies["DataSource"])
    assert trainingrun.grace_seconds(run, source.spec.tokenizer.vocab_size) >= 120
    big = copy.deepcopy(bodies["TrainingRun"])
    big["spec"]["model"].update(
        layers=32, hiddenSize=4096, heads=32, kvHeads=8, intermediateSize=14336, tieEmbeddings=False
    )
    params = trainingrun.parameters(TrainingRun.model_validate(big), 128256)
    assert 7.9e9 < params < 8.1e9  # Llama-3-8B's shape
    # 96 GB at 0.2 GB/s + 120 s; twice the writing when a background save may be in flight at SIGTERM
    assert 1080 < trainingrun.grace_seconds(TrainingRun.model_validate(big), 128256) < 1110
    big["spec"]["checkpointing"] = {"asyncSave": False}
    assert 590 < trainingrun.grace_seconds(TrainingRun.model_validate(big), 128256) < 620


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
    plan = observe(pods=[pod(job)], progress={"version": 1, "step": 50}, body=run_with_status(old))
    assert get_condition(plan.status["conditions"], "Stalled")["status"] == "True"
    assert plan.status["alerts"][-1]["type"] == "Stalled" and plan.status["alerts"][-1]["severity"] == "critical"
    assert "Stalled" in [e.reason for e in plan.events]
    assert plan.requeue_after is None  # stalled already: the next step (an event) clears it


def test_the_plan_says_when_a_stall_would_fall_due(run_world):
    job, observe = run_world
    old = {
        "phase": "Running",
        "step": 50,
        "startTime": "2026-11-26T11:00:00Z",
        "lastProgressTime": (NOW - timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    plan = observe(pods=[pod(job)], progress={"version": 1, "step": 50}, body=run_with_status(old))
    assert get_condition(plan.status["conditions"], "Stalled")["status"] == "False"
    assert plan.requeue_after == pytest.approx(300 - 100 + 1)  # alerts.stallSeconds 300, a second of slack


def test_the_plan_says_when_a_pending_timeout_would_fall_due(run_world, bodies):
    job, observe = run_world
    body = copy.deepcopy(bodies["TrainingRun"])
    body["spec"]["pendingTimeoutSeconds"] = 900  # the Job started 10 minutes before NOW
    plan = observe(pods=[pod(job, phase="Pending")], body=body)
    assert plan.status["phase"] == "Pending" and not [a for a in plan.actions if a.verb == "delete"]
    assert plan.requeue_after == pytest.approx(900 - 600 + 1)
    assert observe(pods=[pod(job, phase="Pending")]).requeue_after is None  # no timeout: nothing falls due

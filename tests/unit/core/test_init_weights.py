"""A TrainingRun that starts from existing weights (spec.init): what it waits for (another run's
checkpoint, an export's safetensors), the trainer flags that say which weights, the volumes they need,
and what a spec may not ask for."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmtrain.api import TrainingRun
from llmtrain.core import Observed, trainingrun
from llmtrain.core.conditions import get_condition
from support.plans import desired_job, plan_objects, pod, reconcile
from support.resources import EXAMPLES, NOW, ready

BASE_CHECKPOINTS = "s3://models/llmtrain/team-a/trainingruns/base/checkpoints"


@pytest.fixture
def continued(bodies) -> dict[str, Any]:
    """The example run, starting from TrainingRun `base`'s latest checkpoint with no shape of its own."""
    body = copy.deepcopy(bodies["TrainingRun"])
    del body["spec"]["model"]
    body["spec"]["init"] = {"trainingRunRef": {"name": "base"}}
    return body


def base_run(bodies, **status: Any) -> dict[str, Any]:
    body = copy.deepcopy(bodies["TrainingRun"])
    body["metadata"]["name"] = "base"
    body["status"] = status
    return body


def base_export(bodies, **status: Any) -> dict[str, Any]:
    body = copy.deepcopy(bodies["ModelExport"])
    body["metadata"]["name"] = "base-export"
    body["status"] = status
    return body


def world(bodies, *dependencies: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    return deps | {(d["kind"], d["metadata"]["name"]): d for d in dependencies}


def trainer(objects: list[dict[str, Any]]) -> dict[str, Any]:
    job = next(o for o in objects if o["kind"] == "Job")
    return job["spec"]["template"]["spec"]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag]


def waiting(plan) -> tuple[str, str, dict[str, Any]]:
    summary = get_condition(plan.status["conditions"], "Succeeded")
    return summary["reason"], plan.status["message"], get_condition(plan.status["conditions"], "InitReady")


def test_dependencies_name_the_run_or_export_it_starts_from(continued):
    assert trainingrun.dependency_keys(continued) == [("DataSource", "shakespeare"), ("TrainingRun", "base")]
    continued["spec"]["init"] = {"modelExportRef": {"name": "base-export"}}
    assert trainingrun.dependency_keys(continued)[1:] == [("ModelExport", "base-export")]
    continued["spec"]["init"] = {"from": "s3://models/llama"}
    assert trainingrun.dependency_keys(continued) == [("DataSource", "shakespeare")]


def test_waits_for_the_latest_checkpoint_until_the_run_succeeded(bodies, cluster, continued):
    plan = reconcile(continued, Observed(dependencies=world(bodies)), cluster, NOW)
    reason, message, init = waiting(plan)
    assert plan.actions == [] and plan.status["phase"] == "Pending"
    assert reason == "WaitingForInit" and "TrainingRun base does not exist yet" in message
    assert init["status"] == "False" and init["message"] == message
    running = base_run(bodies, phase="Running", progress="120/300", latestCheckpoint={"step": 100, "uri": "x"})
    plan = reconcile(continued, Observed(dependencies=world(bodies, running)), cluster, NOW)
    reason, message, _ = waiting(plan)
    assert plan.actions == [] and reason == "WaitingForInit"
    assert "waiting for TrainingRun base: the run to finish (at 120/300)" in message
    failed = base_run(bodies, phase="Failed", message="OOMKilled on rank 0")
    plan = reconcile(continued, Observed(dependencies=world(bodies, failed)), cluster, NOW)
    reason, message, init = waiting(plan)
    assert plan.actions == [] and plan.status["phase"] == "Pending" and reason == "InitRunFailed"
    assert "TrainingRun base failed: OOMKilled on rank 0" in message and init["reason"] == "InitRunFailed"
    assert plan.events[0].type == "Warning"
    done = base_run(bodies, phase="Succeeded", latestCheckpoint={"step": 300, "uri": "x"})
    plan = reconcile(continued, Observed(dependencies=world(bodies, done)), cluster, NOW)
    args = trainer([a.object for a in plan.actions if a.verb == "create"])["containers"][0]["args"]
    assert flag_values(args, "--init") == [BASE_CHECKPOINTS]
    assert flag_values(args, "--init-select") == ["latest"] and "--init-step" not in args
    init = get_condition(plan.status["conditions"], "InitReady")
    assert init["status"] == "True" and init["message"] == BASE_CHECKPOINTS


def test_a_given_step_is_there_once_the_latest_checkpoint_reached_it(bodies, cluster, continued):
    continued["spec"]["init"].update(checkpoint="step", step=200)
    early = base_run(bodies, phase="Running", progress="150/300", latestCheckpoint={"step": 100, "uri": "x"})
    plan = reconcile(continued, Observed(dependencies=world(bodies, early)), cluster, NOW)
    reason, message, _ = waiting(plan)
    assert plan.actions == [] and reason == "WaitingForInit" and "base: step 200 (at 150/300)" in message
    there = base_run(bodies, phase="Running", progress="210/300", latestCheckpoint={"step": 200, "uri": "x"})
    args = trainer(plan_objects(continued, cluster, dependencies=world(bodies, there)))["containers"][0]["args"]
    assert args[args.index("--init") : args.index("--init") + 6] == [
        "--init",
        BASE_CHECKPOINTS,
        "--init-select",
        "step",
        "--init-step",
        "200",
    ]


def test_best_is_asked_for_by_name(bodies, cluster, continued):
    continued["spec"]["init"]["checkpoint"] = "best"
    done = base_run(bodies, phase="Succeeded")
    args = trainer(plan_objects(continued, cluster, dependencies=world(bodies, done)))["containers"][0]["args"]
    assert flag_values(args, "--init-select") == ["best"]


def test_a_started_run_keeps_running_when_its_source_runs_again(bodies, cluster, continued):
    done = base_run(bodies, phase="Succeeded")
    job = desired_job(continued, cluster, world(bodies, done))
    again = base_run(bodies, phase="Running", progress="310/600")  # base was given more steps
    obs = Observed(children={("Job", job["metadata"]["name"]): job}, pods=[pod(job)], dependencies=world(bodies, again))
    plan = reconcile(continued, obs, cluster, NOW)
    assert plan.status["phase"] == "Running" and not [a for a in plan.actions if a.verb == "delete"]
    assert get_condition(plan.status["conditions"], "InitReady")["status"] == "True"


def test_an_export_is_started_from_its_safetensors(bodies, cluster, continued):
    continued["spec"]["init"] = {"modelExportRef": {"name": "base-export"}}
    plan = reconcile(
        continued, Observed(dependencies=world(bodies, base_export(bodies, phase="Running"))), cluster, NOW
    )
    reason, message, _ = waiting(plan)
    assert plan.actions == [] and reason == "WaitingForInit"
    assert "waiting for ModelExport base-export to succeed (Running)" in message
    gguf = {"format": "gguf", "quantization": "q8_0", "uri": "pvc://exports/base-export/model-q8_0.gguf"}
    hf = {"format": "safetensors", "quantization": "none", "uri": "pvc://exports/base-export/hf"}
    only_gguf = base_export(bodies, phase="Succeeded", artifacts=[gguf])
    plan = reconcile(continued, Observed(dependencies=world(bodies, only_gguf)), cluster, NOW)
    reason, message, _ = waiting(plan)
    assert plan.actions == [] and reason == "WaitingForInit" and "no safetensors artifact" in message
    failed = base_export(bodies, phase="Failed", message="greedy tokens differ")
    plan = reconcile(continued, Observed(dependencies=world(bodies, failed)), cluster, NOW)
    assert waiting(plan)[0] == "InitExportFailed" and "base-export failed: greedy tokens differ" in waiting(plan)[1]
    done = base_export(bodies, phase="Succeeded", artifacts=[gguf, hf])
    pod_spec = trainer(plan_objects(continued, cluster, dependencies=world(bodies, done)))
    args = pod_spec["containers"][0]["args"]
    assert flag_values(args, "--init") == ["pvc://exports/base-export/hf"] and "--init-select" not in args
    assert {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "exports"}} in pod_spec["volumes"]


def test_from_a_uri_needs_nothing_to_be_ready(bodies, cluster, local_ctx, continued):
    continued["spec"]["init"] = {"from": "pvc://weights/llama-3.2-1b"}
    pod_spec = trainer(plan_objects(continued, cluster, dependencies=world(bodies)))
    args = pod_spec["containers"][0]["args"]
    assert flag_values(args, "--init") == ["pvc://weights/llama-3.2-1b"] and "--init-select" not in args
    assert {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "weights"}} in pod_spec["volumes"]
    continued["spec"]["init"] = {"from": "weights/llama"}
    local = copy.deepcopy(bodies["DataSource"])
    local["spec"]["sources"] = [{"local": {"path": "data/shakespeare/*.txt"}}]
    args = trainer(plan_objects(continued, local_ctx, dependencies={("DataSource", "shakespeare"): ready(local)}))
    assert flag_values(args["containers"][0]["args"], "--init") == [str(EXAMPLES / "weights/llama")]


def test_a_local_path_to_start_from_is_refused_in_a_cluster_before_the_data_is_ready(cluster, continued):
    continued["spec"]["init"] = {"from": "weights/llama"}
    plan = reconcile(continued, Observed(), cluster, NOW)
    assert plan.actions == [] and plan.status["phase"] == "Failed"
    assert plan.status["failure"]["reason"] == "InvalidSpec" and "spec.init.from" in plan.status["message"]


def test_a_run_cannot_start_from_itself(bodies, cluster, continued):
    continued["spec"]["init"] = {"trainingRunRef": {"name": continued["metadata"]["name"]}}
    plan = reconcile(continued, Observed(dependencies=world(bodies)), cluster, NOW)
    assert plan.status["failure"]["reason"] == "InvalidSpec" and "spec.init.trainingRunRef" in plan.status["message"]


def test_a_shape_left_to_the_weights_gets_half_an_hour_to_save(bodies, cluster, continued):
    run = TrainingRun.model_validate(continued)
    assert trainingrun.parameters(run, 4096) is None and trainingrun.grace_seconds(run, 4096) == 1800
    continued["spec"]["model"] = {"layers": 4, "maxSeqLen": 512}  # partial: hiddenSize and heads from the weights
    assert trainingrun.grace_seconds(TrainingRun.model_validate(continued), 4096) == 1800
    done = base_run(bodies, phase="Succeeded")
    pod_spec = trainer(plan_objects(continued, cluster, dependencies=world(bodies, done)))
    assert pod_spec["terminationGracePeriodSeconds"] == 1800

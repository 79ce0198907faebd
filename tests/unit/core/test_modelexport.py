"""A ModelExport: what it waits for, and its status from the export's report."""

from __future__ import annotations

import copy

from llmtrain.core import Observed
from llmtrain.core.conditions import get_condition
from support.plans import reconcile
from support.resources import NOW, ready

VERSIONS = ["1.29", "1.35"]


def test_export_waits_for_the_run_to_finish(bodies, cluster):
    run = copy.deepcopy(bodies["TrainingRun"])
    run["status"] = {"phase": "Running", "progress": "120/300", "latestCheckpoint": {"step": 100, "uri": "x"}}
    deps = {("TrainingRun", "tiny-llama"): run, ("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    plan = reconcile(bodies["ModelExport"], Observed(dependencies=deps), cluster, NOW)
    assert plan.actions == [] and "120/300" in plan.status["message"]
    run["status"]["phase"] = "Failed"
    plan = reconcile(bodies["ModelExport"], Observed(dependencies=deps), cluster, NOW)
    assert get_condition(plan.status["conditions"], "Succeeded")["reason"] == "TrainingRunFailed"


def test_export_of_a_step_waits_for_that_checkpoint(bodies, cluster):
    export = copy.deepcopy(bodies["ModelExport"])
    export["spec"].update(checkpoint="step", step=200)
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    plan = reconcile(export, Observed(dependencies=deps), cluster, NOW)
    assert get_condition(plan.status["conditions"], "Succeeded")["reason"] == "WaitingForTrainingRun"
    assert plan.status["message"] == "TrainingRun tiny-llama does not exist yet"
    run = copy.deepcopy(bodies["TrainingRun"])
    run["status"] = {"phase": "Running", "progress": "150/300", "latestCheckpoint": {"step": 100, "uri": "x"}}
    deps[("TrainingRun", "tiny-llama")] = run
    plan = reconcile(export, Observed(dependencies=deps), cluster, NOW)
    assert plan.actions == [] and plan.status["message"] == "waiting for TrainingRun tiny-llama: step 200 (at 150/300)"
    assert get_condition(plan.status["conditions"], "CheckpointReady")["reason"] == "WaitingForCheckpoint"
    run["status"]["latestCheckpoint"]["step"] = 200
    plan = reconcile(export, Observed(dependencies=deps), cluster, NOW)
    assert [a.object["kind"] for a in plan.actions if a.verb == "create"] == ["ConfigMap", "Job"]

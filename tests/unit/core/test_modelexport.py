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

"""A TrainingRun on a weighted mixture of DataSources (spec.data): it waits for every one, passes each
to the trainer in order with the volumes they need, and reports each source's share and figures; an
export of such a run reads the first source's tokenizer and validation data."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmtrain.core import Observed, modelexport, trainingrun
from llmtrain.core.conditions import get_condition
from support.plans import desired_job, plan_objects, pod, reconcile
from support.resources import NOW, ready


@pytest.fixture
def mixture(bodies) -> dict[str, Any]:
    """The example run on shakespeare (weight 3) and code (weight 1)."""
    body = copy.deepcopy(bodies["TrainingRun"])
    del body["spec"]["dataSourceRef"]
    body["spec"]["data"] = [
        {"dataSourceRef": {"name": "shakespeare"}, "weight": 3.0},
        {"dataSourceRef": {"name": "code"}, "weight": 1.0},
    ]
    return body


def source(bodies, name: str, output: str) -> dict[str, Any]:
    body = copy.deepcopy(bodies["DataSource"])
    body["metadata"]["name"] = name
    body["spec"]["output"]["uri"] = output
    return body


@pytest.fixture
def sources(bodies) -> dict[tuple[str, str], dict[str, Any]]:
    """Both DataSources ingested, each onto its own volume."""
    return {
        ("DataSource", "shakespeare"): ready(source(bodies, "shakespeare", "pvc://plays/shards")),
        ("DataSource", "code"): ready(source(bodies, "code", "pvc://code/shards")),
    }


def test_dependencies_are_every_source_in_order(mixture):
    assert trainingrun.data_source_names(mixture) == ["shakespeare", "code"]
    assert trainingrun.dependency_keys(mixture) == [("DataSource", "shakespeare"), ("DataSource", "code")]


def test_waits_for_every_datasource_naming_the_first_not_ready(mixture, sources, cluster):
    first = {("DataSource", "code"): sources[("DataSource", "code")]}
    plan = reconcile(mixture, Observed(dependencies=first), cluster, NOW)
    assert plan.actions == [] and plan.status["message"] == "DataSource shakespeare does not exist yet"
    ingesting = copy.deepcopy(sources)
    ingesting[("DataSource", "code")]["status"] = {"phase": "Running", "conditions": []}
    plan = reconcile(mixture, Observed(dependencies=ingesting), cluster, NOW)
    assert plan.actions == [] and plan.status["message"] == "waiting for DataSource code (Running)"
    data_ready = get_condition(plan.status["conditions"], "DataReady")
    assert (data_ready["status"], data_ready["message"]) == ("False", "DataSource code is not ready")
    assert plan.status["sources"] == [{"name": "shakespeare", "weight": 0.75}, {"name": "code", "weight": 0.25}]


def test_the_trainer_reads_each_source_in_order_from_its_own_volume(mixture, sources, cluster):
    pod_spec = next(o for o in plan_objects(mixture, cluster, dependencies=sources) if o["kind"] == "Job")
    pod_spec = pod_spec["spec"]["template"]["spec"]
    args = pod_spec["containers"][0]["args"]
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--data"] == ["pvc://plays/shards", "pvc://code/shards"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod_spec["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"plays", "code"}
    mounts = {m["mountPath"] for m in pod_spec["containers"][0]["volumeMounts"]}
    assert {"/mnt/pvc/plays", "/mnt/pvc/code"} <= mounts


def test_each_sources_figures_and_the_starting_weights_reach_the_status(mixture, sources, cluster):
    job = desired_job(mixture, cluster, sources)
    report = {
        "version": 1,
        "step": 50,
        "totalSteps": 300,
        "valLoss": 3.1,
        "sources": [
            {"name": "shakespeare", "weight": 0.75, "tokensSeen": 76800, "epochs": 0.4, "valLoss": 2.9},
            {"name": "code", "weight": 0.25, "tokensSeen": 25600, "epochs": 1.2, "valLoss": 3.7},
        ],
        "initializedFrom": "s3://models/base/step-00001000",
    }
    obs = Observed(children={("Job", job["metadata"]["name"]): job}, pods=[pod(job)], dependencies=sources)
    obs.progress = report
    plan = reconcile(mixture, obs, cluster, NOW)  # the status checked against the CRD
    assert plan.status["sources"] == report["sources"]
    assert plan.status["initializedFrom"] == "s3://models/base/step-00001000"


def test_an_export_of_a_mixture_run_reads_its_first_source(bodies, mixture, sources, cluster):
    run = copy.deepcopy(mixture)
    run["status"] = {"phase": "Succeeded", "latestCheckpoint": {"step": 300, "uri": "s3://x/step-300"}}
    export = bodies["ModelExport"]
    found = {("TrainingRun", "tiny-llama"): run}
    assert modelexport.dependency_keys(export, found) == [("TrainingRun", "tiny-llama"), ("DataSource", "shakespeare")]
    job = next(o for o in plan_objects(export, cluster, dependencies={**found, **sources}) if o["kind"] == "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--data") + 1] == "pvc://plays/shards"

"""Argo CD health checks (Lua 5.1, as Argo CD's gopher-lua runs them) against statuses the operator's own
core produces for each situation, run with a real Lua interpreter (lupa)."""

from __future__ import annotations

import copy
import importlib.util
import json
from datetime import timedelta

import pytest
import yaml

from llmtrain.api.manifests import read_documents
from llmtrain.core import Context, Observed, reconcile
from support.paths import ROOT
from support.resources import EXAMPLES, NOW, ready, stored

HEALTH = ROOT / "charts" / "argocd" / "health"
pytestmark = pytest.mark.skipif(importlib.util.find_spec("lupa") is None, reason="lupa is not installed")
CLUSTER = Context(storage_root="pvc://llmtrain-storage")


def health(kind: str, obj: dict) -> tuple[str, str]:
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, {**obj, "kind": kind})
    result = lua.execute((HEALTH / "llmtrain.lua").read_text())
    return result["status"], result["message"]


def _to_lua(lua, value):
    """JSON-like Python data as Lua tables (lists 1-based), as Argo CD hands objects to the scripts."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


@pytest.fixture
def bodies():
    documents = read_documents(EXAMPLES / "run.yaml")
    documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "shakespeare/*.txt"}}]
    return {d["kind"]: stored(d, i) for i, d in enumerate(documents)}


def with_status(body, observed=None):
    body = copy.deepcopy(body)
    body["status"] = reconcile(body, observed or Observed(), CLUSTER, NOW).status
    return body


def job(body, deps=None, **status):
    """The Job the core wants for `body`, with the given Job status."""
    plan = reconcile(body, Observed(dependencies=deps or {}), CLUSTER, NOW)
    found = copy.deepcopy(next(a.object for a in plan.actions if a.object["kind"] == "Job"))
    found["metadata"]["uid"] = "job-uid"
    found["status"] = status
    return found


def test_new_and_unobserved_resources_are_progressing(bodies):
    assert health("TrainingRun", bodies["TrainingRun"])[0] == "Progressing"  # no status yet
    observed = with_status(bodies["DataSource"])
    observed["metadata"]["generation"] = 2  # edited since the operator looked
    status, message = health("DataSource", observed)
    assert status == "Progressing" and "generation 2" in message


def test_each_phase_maps_to_its_health(bodies):
    ds = bodies["DataSource"]
    assert health("DataSource", with_status(ds))[0] == "Progressing"  # creating its Job
    done = job(ds, conditions=[{"type": "Complete", "status": "True"}])
    succeeded = with_status(ds, Observed(children={("Job", "shakespeare-ingest"): done}))
    assert health("DataSource", succeeded) == ("Healthy", succeeded["status"]["message"])
    failed_job = job(ds, conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    failed = with_status(ds, Observed(children={("Job", "shakespeare-ingest"): failed_job}))
    assert health("DataSource", failed)[0] == "Degraded"

    run = bodies["TrainingRun"]
    deps = {("DataSource", "shakespeare"): ready(ds)}
    waiting = with_status(run)
    assert health("TrainingRun", waiting)[0] == "Progressing"  # waiting for its DataSource
    blocked = with_status(run, Observed(dependencies={("DataSource", "shakespeare"): failed}))
    assert health("TrainingRun", blocked)[0] == "Degraded"  # its DataSource failed
    suspended_body = copy.deepcopy(run)
    suspended_body["spec"]["suspend"] = True
    paused = job(suspended_body, deps)
    paused["spec"]["suspend"] = True
    suspended = with_status(suspended_body, Observed(children={("Job", "tiny-llama-train"): paused}, dependencies=deps))
    assert health("TrainingRun", suspended)[0] == "Suspended"
    trained = job(run, deps, conditions=[{"type": "Complete", "status": "True"}])
    finished = with_status(run, Observed(children={("Job", "tiny-llama-train"): trained}, dependencies=deps))
    assert health("TrainingRun", finished)[0] == "Healthy"

    export = with_status(
        bodies["ModelExport"], Observed(dependencies={**deps, ("TrainingRun", "tiny-llama"): failed_run(run)})
    )
    assert health("ModelExport", export)[0] == "Degraded"  # its run failed


def failed_run(run):
    run = copy.deepcopy(run)
    run["status"] = {"phase": "Failed", "message": "boom", "conditions": []}
    return run


def test_a_stalled_run_is_degraded(bodies):
    run = copy.deepcopy(bodies["TrainingRun"])
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    running = job(run, deps)
    pod = {
        "metadata": {
            "name": "tiny-llama-train-0-x",
            "labels": {"batch.kubernetes.io/job-name": "tiny-llama-train"},
            "annotations": {},
        },
        "status": {"phase": "Running"},
    }
    run["status"] = {
        "phase": "Running",
        "step": 5,
        "startTime": "2026-11-26T10:00:00Z",
        "observedGeneration": 1,
        "lastProgressTime": (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    stalled = with_status(
        run,
        Observed(
            children={("Job", "tiny-llama-train"): running},
            pods=[pod],
            dependencies=deps,
            progress={"version": 1, "step": 5},
        ),
    )
    status, message = health("TrainingRun", stalled)
    assert status == "Degraded" and message.startswith("Stalled:")


def test_the_argocd_snippet_carries_the_scripts():
    snippet = yaml.safe_load((ROOT / "charts" / "argocd" / "argocd-cm.yaml").read_text())
    for kind in ("DataSource", "TrainingRun", "ModelExport"):
        script = snippet["data"][f"resource.customizations.health.llmtrain.dev_{kind}"]
        assert script == (HEALTH / "llmtrain.lua").read_text(), "run `make crds`"
    assert json.dumps(snippet["metadata"]["labels"]) == '{"app.kubernetes.io/part-of": "argocd"}'

"""Plans of the functional core for the unit tests: every status checked against the CRD as the API
server would check it, and the Jobs and pods the tests build worlds from."""

from __future__ import annotations

import copy

import yaml

from llmtrain.api.manifests import read_documents
from llmtrain.core import Observed
from llmtrain.core import reconcile as core_reconcile
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


def desired_job(body, ctx, deps=None, children=None, name=None):
    """The Job (named `name`, or the first) a plan creates, as the Job controller would have started it."""
    plan = reconcile(body, Observed(children=children or {}, dependencies=deps or {}), ctx, NOW)
    jobs = [a.object for a in plan.actions if a.verb == "create" and a.object["kind"] == "Job"]
    job = copy.deepcopy(next(j for j in jobs if name in (None, j["metadata"]["name"])))
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


def plan_objects(body, ctx, **observed):
    return [a.object for a in reconcile(body, Observed(**observed), ctx, NOW).actions if a.verb == "create"]


def all_children(bodies, ctx):
    ds = bodies["DataSource"]
    out = plan_objects(ds, ctx)
    deps = {("DataSource", "shakespeare"): ready(ds)}
    out += plan_objects(bodies["TrainingRun"], ctx, dependencies=deps)
    run = copy.deepcopy(bodies["TrainingRun"])
    run["status"] = {"phase": "Succeeded", "latestCheckpoint": {"step": 300, "uri": "s3://x/step-300"}}
    out += plan_objects(bodies["ModelExport"], ctx, dependencies={**deps, ("TrainingRun", "tiny-llama"): run})
    return out


def run_with_status(status):
    """The example's TrainingRun as stored, with this status."""
    body = stored(read_documents(EXAMPLES / "run.yaml")[1], 1)
    body["status"] = status
    return body

"""A terminal status is decided on a fresh read: a watch cache can hold a failed Job's update before its
pod's exit code, and the Failed status, its diagnosis and its Event are written once."""

from __future__ import annotations

import copy
import json
from typing import Any

from llmtrain.control.reconciler import Reconciler
from llmtrain.core import Context, naming
from llmtrain.core import reconcile as core_reconcile
from llmtrain.local.filestore import FileStore
from support.resources import EXAMPLES, NOW, world_with_a_run


class StaleCache:
    """The world as a lagging cache shows it: the pods as they were (running), the rest as it is."""

    def __init__(self, world: FileStore, pods: list[dict[str, Any]]) -> None:
        self.world, self.pods = world, pods

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods) if kind == "Pod" else self.world.list(kind, namespace, labels)

    def direct(self) -> FileStore:
        return self.world


def test_a_failure_is_diagnosed_on_what_the_api_server_holds_not_on_a_lagging_cache(tmp_path):
    world, run = world_with_a_run(tmp_path)
    namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
    ctx = Context(local=True, base_dir=str(EXAMPLES))
    Reconciler(world, ctx).reconcile("TrainingRun", namespace, name)  # creates the Job
    job = world.get("Job", namespace, naming.train_job(name))
    world.patch_status(
        "Job",
        namespace,
        job["metadata"]["name"],
        {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]},
    )
    running = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job['metadata']['name']}-0-abcde",
            "namespace": namespace,
            "labels": {
                naming.kind_label("TrainingRun"): name,
                "batch.kubernetes.io/job-name": job["metadata"]["name"],
                "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
            },
            "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
        },
        "status": {"phase": "Running"},
    }
    exit_2 = {
        "exitCode": 2,
        "reason": "Error",
        "message": json.dumps({"error": "spec.model: vocab mismatch", "exitCode": 2}),
    }
    world.create(
        {
            **running,
            "status": {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": exit_2}}]},
        }
    )
    cache = StaleCache(world, [running])

    body = world.get("TrainingRun", namespace, name)
    stale = core_reconcile(body, Reconciler(cache, ctx).observe(body), ctx, NOW).status
    assert stale["phase"] == "Failed" and stale["failure"]["reason"] != "BadInput"  # what the cache alone says

    Reconciler(cache, ctx).reconcile("TrainingRun", namespace, name)
    status = world.get("TrainingRun", namespace, name)["status"]
    assert status["phase"] == "Failed" and status["failure"]["reason"] == "BadInput"
    assert "vocab mismatch" in status["failure"]["message"]
    assert [(e["type"], e["reason"]) for e in world.events if e["reason"] != "Creating"][-1] == ("Warning", "BadInput")

"""Why pods do not run, in the status: the real scheduler's Unschedulable message with the spec field to fix,
and the Job controller's FailedCreate Event (a missing PriorityClass, an exceeded quota) when the API server
refuses the pods. The objects are shaped as Kubernetes 1.34 writes them."""

from __future__ import annotations

import copy
from typing import Any

from llmtrain.control.reconciler import Reconciler
from llmtrain.core import Context, Observed, diagnosis, jobs, naming
from llmtrain.core.conditions import get_condition
from llmtrain.local.filestore import FileStore
from support.plans import pod, reconcile
from support.resources import EXAMPLES, NOW, ready, world_with_a_run

NODE_AFFINITY_MESSAGE = (
    "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are"
    " available: 2 Preemption is not helpful for scheduling."
)


def failed_create(job: dict[str, Any], message: str, uid: str = "job-uid", at: str = "2026-11-26T11:50:03Z") -> dict:
    """A FailedCreate Event as the Job controller records it."""
    name = job["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.187b0c2d9f1e4a10", "namespace": "team-a", "creationTimestamp": at},
        "involvedObject": {"kind": "Job", "namespace": "team-a", "name": name, "uid": uid, "apiVersion": "batch/v1"},
        "reason": "FailedCreate",
        "message": f'Error creating: pods "{name}-0-x7k2p" is forbidden: {message}',
        "source": {"component": "job-controller"},
        "firstTimestamp": "2026-11-26T11:50:01Z",
        "lastTimestamp": at,
        "count": 4,
        "type": "Warning",
        "reportingComponent": "job-controller",
    }


def test_a_missing_priority_class_names_the_field_and_the_fix(run_world):
    job, _ = run_world
    found = diagnosis.creation_failure(job, [failed_create(job, "no PriorityClass with name nope was found")])
    assert found.reason == "PriorityClassNotFound"
    assert "PriorityClass nope (spec.pod.priorityClassName) does not exist: create it" in found.message
    assert found.message.endswith("or fix spec.pod.priorityClassName")


def test_only_the_newest_event_of_this_job_counts(run_world):
    job, _ = run_world
    earlier_job = failed_create(job, "no PriorityClass with name old was found", uid="uid-of-the-replaced-job")
    other = copy.deepcopy(failed_create(job, "no PriorityClass with name other was found"))
    other["involvedObject"]["name"] = "another-train"
    quota = "exceeded quota: team-a, requested: rdma/ib=1, used: rdma/ib=8, limited: rdma/ib=8"
    old = failed_create(job, "no PriorityClass with name nope was found", at="2026-11-26T11:50:01Z")
    new = failed_create(job, quota, at="2026-11-26T11:59:00Z")
    assert diagnosis.creation_failure(job, [earlier_job, other]) is None
    found = diagnosis.creation_failure(job, [new, old, earlier_job])
    assert found.reason == "QuotaExceeded" and "requested: rdma/ib=1" in found.message
    refused = failed_create(job, 'violates PodSecurity "restricted:latest": seccompProfile')
    assert diagnosis.creation_failure(job, [refused]).reason == "FailedCreate"
    made_since = pod(job, phase="Failed")
    made_since["metadata"]["creationTimestamp"] = "2026-11-26T11:59:30Z"  # after the quota refusal
    assert diagnosis.creation_failure(job, [new, old], [made_since]) is None


def test_a_run_whose_pods_are_refused_says_why_and_looks_again(bodies, cluster, run_world):
    job, observe = run_world
    assert observe().status["message"] == "training: waiting for pods to start"  # no Event: no reason known
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    event = failed_create(job, "no PriorityClass with name nope was found")
    observed = Observed(children={("Job", job["metadata"]["name"]): job}, dependencies=deps, events=[event])
    plan = reconcile(bodies["TrainingRun"], observed, cluster, NOW)
    assert plan.status["phase"] == "Pending"
    assert get_condition(plan.status["conditions"], "Running")["reason"] == "PriorityClassNotFound"
    assert "spec.pod.priorityClassName" in plan.status["message"]
    assert plan.requeue_after == jobs.MISSING_PODS_RECHECK_SECONDS  # an Event changes no watched object
    assert observe(pods=[pod(job, phase="Pending")]).requeue_after is None  # the pods exist: nothing to look for


def test_no_rechecks_on_one_machine(run_world):
    job, _ = run_world
    assert jobs.recheck_missing_pods(job, [], Context(local=True)) is None
    assert jobs.recheck_missing_pods(job, [], Context()) == jobs.MISSING_PODS_RECHECK_SECONDS


def test_unschedulable_says_the_schedulers_words_and_the_field_to_fix(run_world):
    job, observe = run_world
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": NODE_AFFINITY_MESSAGE}
    plan = observe(pods=[pod(job, phase="Pending", conditions=[scheduled])])
    assert get_condition(plan.status["conditions"], "Running")["reason"] == "Unschedulable"
    assert NODE_AFFINITY_MESSAGE in plan.status["message"]
    assert "spec.resources.nodeSelector and spec.pod.affinity.nodeAffinity require" in plan.status["message"]


class RecordingStore(FileStore):
    """The local store, answering Warning Events as the API server would and recording who asked."""

    def __init__(self, root, events: list[dict[str, Any]]) -> None:
        super().__init__(root)
        self.asked: list[tuple[str, str, str]] = []
        self.answer = events

    def warning_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        self.asked.append((namespace, kind, name))
        return self.answer


def test_the_reconciler_reads_events_only_for_a_job_short_of_pods(tmp_path):
    world, run = world_with_a_run(tmp_path)
    namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
    reconciler = Reconciler(world, Context(local=True, base_dir=str(EXAMPLES)))
    reconciler.reconcile("TrainingRun", namespace, name)  # creates the Job
    job = world.get("Job", namespace, naming.train_job(name))
    store = RecordingStore(
        tmp_path, [failed_create(job, "no PriorityClass with name nope was found", job["metadata"]["uid"])]
    )
    observed = Reconciler(store, reconciler.ctx).observe(store.get("TrainingRun", namespace, name))
    assert store.asked == [(namespace, "Job", naming.train_job(name))]
    assert [e["reason"] for e in observed.events] == ["FailedCreate"]
    running = pod(job)
    labels = running["metadata"]["labels"]
    labels.update(
        {"batch.kubernetes.io/controller-uid": job["metadata"]["uid"], naming.kind_label("TrainingRun"): name}
    )
    running["metadata"]["namespace"] = namespace
    store.create({"apiVersion": "v1", "kind": "Pod", **running})
    store.asked.clear()
    Reconciler(store, reconciler.ctx).observe(store.get("TrainingRun", namespace, name))
    assert store.asked == []

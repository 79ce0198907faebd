"""spec.pod (env, affinity, priority, scheduler, labels, annotations, pull Secrets, extended resources,
/dev/shm), placement in spec.resources and Kueue's queue and priority, on every Job of every kind; a
change replaces the Jobs; the local runner keeps env and drops the cluster's scheduling."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from llmtrain.api import DataSource, parse_resource
from llmtrain.core import Context, Observed, children, datasource, jobs, modelexport, trainingrun
from support.plans import all_children, desired_job, pod, reconcile
from support.resources import NOW, ready, stored

AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p5.48xlarge"]}
                    ]
                }
            ]
        },
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 50,
                "preference": {
                    "matchExpressions": [
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"]}
                    ]
                },
            }
        ],
    },
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "labelSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    },
}
POD = {
    "env": [
        {"name": "NCCL_DEBUG", "value": "WARN"},
        {"name": "FI_PROVIDER", "value": "efa"},
        {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key"}}},
    ],
    "affinity": AFFINITY,
    "priorityClassName": "training-high",
    "schedulerName": "volcano",
    "labels": {"team": "nlp", "volcano.sh/queue-name": "research"},
    "annotations": {"scheduling.k8s.io/group-name": "pretrain"},
    "imagePullSecrets": [{"name": "registry"}],
    "extraResources": {"vpc.amazonaws.com/efa": 4, "rdma/ib": 1},
    "shmSize": "16Gi",
}
PLACEMENT = {
    "nodeSelector": {"pool": "cpu"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "data", "effect": "NoSchedule"}],
}


def with_controls(bodies: dict[str, dict[str, Any]], workers: int = 1) -> dict[str, dict[str, Any]]:
    """The example's resources with POD on every kind, placement and a Kueue queue with a priority."""
    out = {}
    for index, (kind, body) in enumerate(bodies.items()):
        body = copy.deepcopy(body)
        body["spec"].update(pod=copy.deepcopy(POD), queueName="team-a", workloadPriorityClassName="high")
        if kind != "TrainingRun":
            body["spec"]["resources"].update(copy.deepcopy(PLACEMENT))
        if kind == "DataSource":
            body["spec"]["workers"] = workers
        out[kind] = stored(parse_resource(body).to_wire(), index)
    return out


def every_job(bodies: dict[str, dict[str, Any]], ctx: Context) -> list[dict[str, Any]]:
    """The Jobs of every kind as the plans create them, and each later ingest stage's (built at once here)."""
    stages = children.objects(datasource.build(bodies["DataSource"], parse_resource(bodies["DataSource"]), ctx))
    return [o for o in stages + all_children(bodies, ctx) if o["kind"] == "Job"]


def built_jobs(bodies: dict[str, dict[str, Any]], ctx: Context) -> list[dict[str, Any]]:
    """Each kind's Jobs from its `build` alone (no plan): the ingest stages', the trainer's, the export's."""
    source, run, export = (parse_resource(bodies[kind]) for kind in ("DataSource", "TrainingRun", "ModelExport"))
    stages = children.objects(datasource.build(bodies["DataSource"], source, ctx))
    trainer = trainingrun.build(bodies["TrainingRun"], run, [(source, "team-a")], None, ctx).job
    exporter = modelexport.build(bodies["ModelExport"], export, "s3://x/step-300", source, "team-a", run, ctx).job
    return [o for o in stages if o["kind"] == "Job"] + [trainer, exporter]


@pytest.mark.parametrize("workers", [1, 4])
def test_every_job_of_every_kind_carries_the_pod_controls(bodies, cluster, workers):
    found = every_job(with_controls(bodies, workers), cluster)
    names = {job["metadata"]["name"] for job in found}
    assert {"tiny-llama-train", "tiny-llama-export-export", "shakespeare-ingest"} <= names
    assert len(names) == 2 + (6 if workers > 1 else 1)
    for job in found:
        template, pod_spec = job["spec"]["template"], job["spec"]["template"]["spec"]
        (container,) = pod_spec["containers"]
        env = [item["name"] for item in container["env"]]
        assert env[-3:] == ["NCCL_DEBUG", "FI_PROVIDER", "WANDB_API_KEY"]  # after the workload contract's
        assert container["env"][-1]["valueFrom"] == {"secretKeyRef": {"name": "wandb", "key": "key"}}
        assert pod_spec["affinity"] == AFFINITY
        assert (pod_spec["priorityClassName"], pod_spec["schedulerName"]) == ("training-high", "volcano")
        assert pod_spec["imagePullSecrets"] == [{"name": "registry"}]
        limits = container["resources"]["limits"]
        assert (limits["vpc.amazonaws.com/efa"], limits["rdma/ib"]) == ("4", "1")
        shm = next(v for v in pod_spec["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        labels = template["metadata"]["labels"]
        assert labels["team"] == "nlp" and labels["volcano.sh/queue-name"] == "research"
        assert labels["app.kubernetes.io/managed-by"] == "llmtrain-operator"  # the operator's stay
        assert template["metadata"]["annotations"] == {"scheduling.k8s.io/group-name": "pretrain"}
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
        assert job["spec"]["suspend"] is True  # Kueue admits it
        if job["metadata"]["name"] != "tiny-llama-train":
            assert pod_spec["nodeSelector"] == {"pool": "cpu"}
            assert pod_spec["tolerations"] == PLACEMENT["tolerations"]


@pytest.mark.parametrize("version", ["1.29", "1.35"])
def test_jobs_with_every_pod_control_pass_kubernetes_validate_strict(bodies, cluster, version):
    for job in every_job(with_controls(bodies, workers=4), cluster):
        kubernetes_validate.validate(job, version, strict=True)


def test_without_pod_controls_the_jobs_are_as_before(bodies, cluster):
    for job in every_job(bodies, cluster):
        pod_spec = job["spec"]["template"]["spec"]
        assert not {"affinity", "priorityClassName", "schedulerName", "imagePullSecrets"} & set(pod_spec)
        assert "annotations" not in job["spec"]["template"]["metadata"]
        assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
        shm = [v for v in pod_spec["volumes"] if v["name"] == "dshm"]
        assert shm == (
            [{"name": "dshm", "emptyDir": {"medium": "Memory"}}] if "train" in job["metadata"]["name"] else []
        )


CHANGES = [
    ("env", [{"name": "NCCL_DEBUG", "value": "INFO"}]),
    ("affinity", {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}),
    ("priorityClassName", "training-low"),
    ("schedulerName", "scheduler-plugins-scheduler"),
    ("labels", {"team": "vision"}),
    ("annotations", {}),
    ("imagePullSecrets", []),
    ("extraResources", {"rdma/ib": 2}),
    ("shmSize", "32Gi"),
]


def ingest_job(source: dict[str, Any], pod: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The ingest Job of the DataSource `source` with `pod` as its spec.pod."""
    body = copy.deepcopy(source)
    body["spec"]["pod"] = pod
    return datasource.build(body, DataSource.model_validate(body), ctx).ingest


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_changed_pod_control_replaces_the_job(bodies, cluster, field, value):
    before = ingest_job(bodies["DataSource"], POD, cluster)
    assert jobs.stale(before, ingest_job(bodies["DataSource"], {**POD, field: value}, cluster))
    assert not jobs.stale(before, ingest_job(bodies["DataSource"], copy.deepcopy(POD), cluster))


def test_a_changed_spec_pod_replaces_every_kinds_jobs(bodies, cluster):
    before = {job["metadata"]["name"]: job for job in built_jobs(with_controls(bodies, workers=4), cluster)}
    changed = with_controls(bodies, workers=4)
    for body in changed.values():
        body["spec"]["pod"]["env"] = [{"name": "NCCL_DEBUG", "value": "INFO"}]
    after = built_jobs(changed, cluster)
    assert len(after) == 8 and all(jobs.stale(before[job["metadata"]["name"]], job) for job in after)


def test_the_kueue_priority_alone_does_not_replace_a_job(bodies, cluster):
    before = built_jobs(with_controls(bodies), cluster)
    changed = with_controls(bodies)
    for body in changed.values():
        body["spec"]["workloadPriorityClassName"] = "low"
    after = built_jobs(changed, cluster)
    assert [jobs.stale(old, new) for old, new in zip(before, after, strict=True)] == [False] * len(after)
    assert {job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] for job in after} == {"low"}


def test_the_local_runner_keeps_env_and_drops_kueue(bodies, local_ctx):
    source = with_controls(bodies)["DataSource"]
    job = children.objects(datasource.build(source, DataSource.model_validate(source), local_ctx))[1]
    assert [e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]][-1] == "WANDB_API_KEY"
    assert job["spec"]["suspend"] is False and "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


@pytest.mark.parametrize("kind", ["DataSource", "ModelExport"])
def test_a_job_held_by_kueue_is_pending_queued(bodies, cluster, kind):
    queued = with_controls(bodies)
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    if kind == "ModelExport":
        run = copy.deepcopy(bodies["TrainingRun"])
        run["status"] = {"phase": "Succeeded", "latestCheckpoint": {"step": 300, "uri": "s3://x/step-300"}}
        deps[("TrainingRun", "tiny-llama")] = run
    job = desired_job(queued[kind], cluster, deps)
    assert job["spec"]["suspend"] is True
    observed = {("Job", job["metadata"]["name"]): job}
    plan = reconcile(queued[kind], Observed(children=observed, dependencies=deps), cluster, NOW)
    assert (plan.status["phase"], plan.status["message"]) == (
        "Pending",
        "queued in Kueue LocalQueue team-a: waiting for admission",
    )
    assert not [a for a in plan.actions if a.verb == "patch"]  # the operator never unsuspends it: Kueue does


def test_pods_made_by_the_job_controller_count(bodies, cluster):
    job = desired_job(bodies["DataSource"], cluster)
    assert jobs.missing_pods(job, [])
    assert not jobs.missing_pods(job, [pod(job, phase="Pending")])
    assert jobs.missing_pods(job, [pod(job, phase="Failed")])  # its replacement is missing
    assert not jobs.missing_pods({**job, "spec": {**job["spec"], "suspend": True}}, [])

"""Every child manifest the core emits is a valid Kubernetes object, wired as the contracts say."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from llmtrain.core import Observed, reconcile
from llmtrain.core import children as kids
from support.resources import NOW, ready

VERSIONS = ["1.29", "1.35"]


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


@pytest.mark.parametrize("version", VERSIONS)
def test_every_child_passes_kubernetes_validate_strict(bodies, cluster, version):
    objects = all_children(bodies, cluster)
    assert sorted({o["kind"] for o in objects}) == [
        "ConfigMap",
        "Job",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_workers_make_an_indexed_ingest_job_then_a_merge(bodies, cluster):
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"]["workers"] = 4
    jobs = [o for o in plan_objects(ds, cluster) if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == ["shakespeare-ingest"]  # the merge waits for the parts
    ingest = jobs[0]["spec"]
    assert ingest["completions"] == ingest["parallelism"] == 4 and ingest["completionMode"] == "Indexed"
    args = ingest["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--shard-index", "$(JOB_COMPLETION_INDEX)", "--shard-count", "4"]
    done = copy.deepcopy(jobs[0])
    done["metadata"]["uid"] = "job-uid"
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    later = plan_objects(ds, cluster, children={("Job", "shakespeare-ingest"): done})
    merge = [o for o in later if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in merge] == ["shakespeare-merge"]
    assert merge[0]["spec"]["template"]["spec"]["containers"][0]["args"][-3:] == ["--merge", "--shard-count", "4"]


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


def test_pods_are_locked_down_and_owned(bodies, cluster):
    for obj in all_children(bodies, cluster):
        ref = obj["metadata"]["ownerReferences"][0]
        assert ref["controller"] is True and ref["uid"].startswith("uid-")
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmtrain-operator"
        if obj["kind"] != "Job":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        if obj["metadata"]["name"] != "tiny-llama-train":
            assert pod["automountServiceAccountToken"] is False


def test_source_secrets_are_mounted_files_never_values(bodies, cluster):
    ds = copy.deepcopy(bodies["DataSource"])
    ds["spec"]["sources"] = [
        {"s3": {"bucket": "corpus", "credentialsSecret": {"name": "s3-creds"}}},
        {"sql": {"urlSecret": {"name": "db", "key": "url"}, "query": "select text from t"}},
    ]
    job = next(o for o in plan_objects(ds, cluster) if o["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"s3-creds", "db"}
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/var/run/secrets/llmtrain/s3-creds", "/var/run/secrets/llmtrain/db"} <= mounts


def test_grace_period_covers_a_checkpoint_save(bodies):
    from llmtrain.api import DataSource, TrainingRun

    run = TrainingRun.model_validate(bodies["TrainingRun"])
    source = DataSource.model_validate(bodies["DataSource"])
    assert kids.grace_seconds(run, source.spec.tokenizer.vocab_size) >= 120
    big = copy.deepcopy(bodies["TrainingRun"])
    big["spec"]["model"].update(
        layers=32, hiddenSize=4096, heads=32, kvHeads=8, intermediateSize=14336, tieEmbeddings=False
    )
    params = kids.parameters(TrainingRun.model_validate(big), 128256)
    assert 7.9e9 < params < 8.1e9  # Llama-3-8B's shape
    assert 590 < kids.grace_seconds(TrainingRun.model_validate(big), 128256) < 620  # 96 GB at 0.2 GB/s + 120 s


def test_local_paths_are_refused_in_a_cluster_with_the_field(bodies, cluster):
    from llmtrain.api.manifests import read_documents
    from support.paths import ROOT
    from support.resources import stored

    ds = stored(read_documents(ROOT / "examples" / "run.yaml")[0], 9)
    plan = reconcile(ds, Observed(), cluster, NOW)
    assert plan.actions == []
    assert plan.status["phase"] == "Failed" and plan.status["failure"]["reason"] == "InvalidSpec"
    assert "spec.sources[0].local" in plan.status["message"]

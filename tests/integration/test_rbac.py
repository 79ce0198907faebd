"""The chart's RBAC is exactly what the operator calls: every verb it uses is granted, and nothing more.

The calls are not listed by hand: the emulated API server records every request by client (User-Agent:
kopf's watches, the operator's `KubeStore`, the trainer's progress sink) while the operator runs every
code path that touches the API: a run end to end, a training setting raised (the Job is replaced and
resumes), and drift on its children (a Role, a RoleBinding, a Service, a spec ConfigMap) corrected, also
when the edit took an object out of the operator's watches (its managed-by label removed).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from prometheus_client import generate_latest

from support.cluster import NAMESPACE, small_run
from support.paths import ROOT

pytestmark = pytest.mark.emulated  # records the API calls the emulated server sees

HELM = ROOT / ".tools" / "bin" / "helm"


def granted() -> set[tuple[str, str, str]]:
    text = subprocess.run(
        [
            str(HELM),
            "template",
            "llmtrain",
            str(ROOT / "charts" / "llmtrain"),
            "--set",
            f"watchNamespaces={{{NAMESPACE}}}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    role = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "Role")
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.skipif(not HELM.exists(), reason="helm is not installed: run `make tools`")
def test_chart_rbac_is_exactly_what_the_operator_calls(cluster):
    cluster.start_operator(resync_seconds=2.0)
    cluster.apply(small_run(steps=8))
    cluster.wait_phase("ModelExport", "tiny-llama-export", "Succeeded", 300)

    def edit(spec: dict) -> None:
        cluster.custom.patch_namespaced_custom_object(
            "llmtrain.dev", "v1alpha1", NAMESPACE, "trainingruns", "tiny-llama", {"spec": spec}
        )

    def finished_generation(generation: int) -> dict | None:
        status = cluster.get("TrainingRun", "tiny-llama").get("status") or {}
        ok = status.get("phase") == "Succeeded" and status.get("observedGeneration") == generation
        return status if ok else None

    # train longer, suspended: the Job is replaced (a new one, created suspended), then resumed
    edit({"training": {"maxSteps": 12}, "suspend": True})
    suspended = cluster.wait_phase("TrainingRun", "tiny-llama", "Suspended", 120)
    assert suspended["observedGeneration"] == 2 and cluster.get("Job", "tiny-llama-train")["spec"]["suspend"]
    edit({"suspend": False})
    done = cluster.wait(lambda: finished_generation(3), 300, "the run did not continue to 12 steps")
    assert done["progress"] == "12/12" and done["latestCheckpoint"]["step"] == 12

    store = cluster.store
    managed = "app.kubernetes.io/managed-by"
    unlabelled = {"metadata": {"labels": {managed: None}}}  # out of the operator's watches: read back, relabelled
    store.patch(
        "Role",
        NAMESPACE,
        "tiny-llama-trainer",
        {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}], **unlabelled},
    )
    store.patch(
        "RoleBinding",
        NAMESPACE,
        "tiny-llama-trainer",
        {"subjects": [{"kind": "ServiceAccount", "name": "intruder", "namespace": "x"}], **unlabelled},
    )
    store.patch("Service", NAMESPACE, "tiny-llama-train", {"spec": {"selector": {"app": "elsewhere"}}, **unlabelled})
    store.patch("ConfigMap", NAMESPACE, "shakespeare-ingest-spec", {"data": {"resource.yaml": "tampered"}})
    store.patch("ConfigMap", NAMESPACE, "tiny-llama-progress", unlabelled)
    store.patch("ServiceAccount", NAMESPACE, "tiny-llama-trainer", unlabelled)

    def restored() -> bool:
        role = store.get("Role", NAMESPACE, "tiny-llama-trainer")
        binding = store.get("RoleBinding", NAMESPACE, "tiny-llama-trainer")
        service = store.get("Service", NAMESPACE, "tiny-llama-train")
        spec = store.get("ConfigMap", NAMESPACE, "shakespeare-ingest-spec")
        relabelled = [
            store.get(kind, NAMESPACE, name)["metadata"]["labels"].get(managed)
            for kind, name in [
                ("Role", "tiny-llama-trainer"),
                ("RoleBinding", "tiny-llama-trainer"),
                ("Service", "tiny-llama-train"),
                ("ConfigMap", "tiny-llama-progress"),
                ("ServiceAccount", "tiny-llama-trainer"),
            ]
        ]
        return (
            role["rules"][0]["resources"] == ["configmaps"]
            and binding["subjects"][0]["name"] == "tiny-llama-trainer"
            and "app" not in service["spec"]["selector"]
            and spec["data"]["resource.yaml"] != "tampered"
            and relabelled == ["llmtrain-operator"] * 5
        )

    cluster.wait(restored, 60, "drift on owned objects was not corrected")

    # the operator's watch cache, after all that, holds exactly what the server holds
    cache = cluster.operator.store
    managed = {"app.kubernetes.io/managed-by": "llmtrain-operator"}

    def versions(objects: list[dict]) -> set[tuple[str, str]]:
        return {(o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in objects}

    def cache_matches() -> bool:
        kinds = ("Job", "Pod", "ConfigMap", "Service", "ServiceAccount", "Role", "RoleBinding")
        same = [versions(store.list(k, NAMESPACE, managed)) == versions(cache.list(k, NAMESPACE)) for k in kinds]
        return all(same) and versions(store.list("TrainingRun", NAMESPACE)) == versions(
            cache.list("TrainingRun", NAMESPACE)
        )

    cluster.wait(cache_matches, 30, "the watch cache did not converge with the server")
    metrics = generate_latest(cluster.operator.metrics.registry).decode()
    jobs = len(store.list("Job", NAMESPACE, managed))
    assert f'llmtrain_cache_objects{{kind="Job"}} {jobs}.0' in metrics and "llmtrain_work_queue_depth " in metrics

    calls = cluster.api.server.calls
    operator = {
        (verb, group, resource) for agent, verb, group, resource, _ in calls if agent in ("kopf", "llmtrain-operator")
    }
    assert operator == granted()  # every call granted, every grant used

    trainer = {(verb, resource, name) for agent, verb, _, resource, name in calls if agent == "llmtrain-trainer"}
    assert trainer == {("patch", "configmaps", "tiny-llama-progress")}  # its own ConfigMap, nothing else

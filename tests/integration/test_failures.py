"""Failure paths with the real operator: bad data, a killed trainer, an operator restart, API faults,
immutable fields, and deletion that cascades to children but keeps the artifacts."""

from __future__ import annotations

import json
import os
import signal

import kubernetes
import pytest

from support.cluster import GROUP, NAMESPACE, small_run


def test_failing_datasource_is_diagnosed_and_blocks_its_run(cluster):
    cluster.start_operator()
    documents = small_run()
    documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "nothing-here/*.txt"}}]
    cluster.apply(documents[:2])
    data = cluster.wait_phase("DataSource", "shakespeare", "Failed", 120)
    assert data["failure"]["reason"] == "BadInput" and data["failure"]["exitCode"] == 2
    assert "shakespeare-ingest-0-" in data["failure"]["pod"]
    assert len(cluster.store.list("Pod", NAMESPACE)) == 1  # FailJob: a bad spec is not retried
    run = cluster.wait(
        lambda: (
            (cluster.get("TrainingRun", "tiny-llama").get("status") or {})
            .get("message", "")
            .startswith("DataSource shakespeare failed")
        ),
        30,
        "the run never said why it waits",
    )
    assert run
    events = cluster.wait(
        lambda: [e for e in cluster.store.list("Event", NAMESPACE) if e["reason"] == "BadInput"],
        10,
        "no BadInput Event",  # posted just after the status it reports
    )
    assert events[0]["type"] == "Warning"


@pytest.mark.emulated
def test_killed_trainer_resumes_operator_restart_and_api_faults_are_survived(cluster):
    cluster.start_operator()
    cluster.apply(small_run(steps=40))
    cluster.wait(
        lambda: (cluster.get("TrainingRun", "tiny-llama").get("status") or {}).get("latestCheckpoint"),
        240,
        "no checkpoint",
    )
    first = cluster.get("Job", "tiny-llama-train")
    pod = next(p for p in cluster.store.list("Pod", NAMESPACE) if p["metadata"]["name"].startswith("tiny-llama-train-"))
    os.kill(cluster.executor.pid(pod["metadata"]["name"]), signal.SIGKILL)  # the node's trainer dies
    cluster.stop_operator()  # and the operator restarts while that happens
    cluster.api.server.faults.conflict_rate = 0.15  # 409s on writes
    cluster.api.server.faults.error_rate = 0.05  # and 500s
    cluster.api.call(cluster.api.server.cut_watches)
    cluster.start_operator()
    cluster.api.call(cluster.api.server.cut_watches)  # and the watch streams are cut once more
    run = cluster.wait_phase("TrainingRun", "tiny-llama", "Succeeded", 300)
    cluster.api.server.faults.conflict_rate = cluster.api.server.faults.error_rate = 0.0
    assert run["restarts"] == 1 and run["lastFailure"]["exitCode"] == 137 and run["progress"] == "40/40"
    assert cluster.get("Job", "tiny-llama-train")["metadata"]["uid"] == first["metadata"]["uid"]  # not recreated
    assert cluster.names("Service") == ["tiny-llama-train"]
    logs = sorted((cluster.root / "pods" / NAMESPACE).glob("tiny-llama-train-0-*/log"))
    assert len(logs) == 2 and '"Resumed"' in "".join(log.read_text() for log in logs)
    cluster.wait_phase("ModelExport", "tiny-llama-export", "Succeeded", 300)
    assert cluster.names("Job") == ["shakespeare-ingest", "tiny-llama-export-export", "tiny-llama-train"]
    assert len([p for p in cluster.store.list("Pod", NAMESPACE) if "-train-" in p["metadata"]["name"]]) == 2
    cluster.wait(
        lambda: "Restarted" in {e["reason"] for e in cluster.store.list("Event", NAMESPACE)}, 10, "no Restarted Event"
    )


def test_immutable_fields_and_deletion_that_keeps_artifacts(cluster):
    cluster.start_operator()
    cluster.apply(small_run(steps=10)[:2])
    run = cluster.wait_phase("TrainingRun", "tiny-llama", "Succeeded", 300)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        cluster.custom.patch_namespaced_custom_object(
            *GROUP, "trainingruns", "tiny-llama", {"spec": {"model": {"layers": 8}}}
        )
    assert refused.value.status == 422 and "spec.model is immutable" in json.loads(refused.value.body)["message"]
    cluster.custom.delete_namespaced_custom_object(*GROUP, "trainingruns", "tiny-llama")
    owned = ("Job", "Service", "ServiceAccount", "Role", "RoleBinding", "ConfigMap")
    cluster.wait(
        lambda: not [(k, n) for k in owned for n in cluster.names(k) if n.startswith("tiny-llama")],
        60,
        "the run's children outlived it",
    )
    if cluster.volumes:  # artifacts are the user's: deletion keeps them
        checkpoint = cluster.volumes / run["latestCheckpoint"]["uri"][len("pvc://") :]
        assert checkpoint.is_dir() and (checkpoint.parent / "latest").is_file()

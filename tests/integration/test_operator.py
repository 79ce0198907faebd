"""The real operator against the emulated API server or a real cluster: apply the examples, watch them succeed."""

from __future__ import annotations

import json

import pytest

from llmtrain.core import naming
from support import examples
from support.cluster import NAMESPACE, small_run

STAGES = ("ingest", "dedup", "cluster", "tokenizer", "encode", "manifest")


def test_example_run_succeeds_end_to_end(cluster):
    """The example with a DataSource ingested in stages (workers: 2, one Job per stage), trained, exported."""
    cluster.start_operator()
    cluster.apply(small_run(workers=2))
    data = cluster.wait_phase("DataSource", "shakespeare", "Succeeded", 180)
    assert data["stats"]["documentsOut"] == 12 and data["observedGeneration"] == 1
    for stage in STAGES:
        job = cluster.get("Job", f"shakespeare-{stage}")
        expected = 2 if stage in ("ingest", "dedup", "encode") else 1
        assert job["spec"]["completions"] == expected and job["status"]["succeeded"] == expected, stage
    run = cluster.wait_phase("TrainingRun", "tiny-llama", "Succeeded", 300)
    assert run["progress"] == "30/30" and run["latestCheckpoint"]["step"] == 30 and run["loss"] > 0
    conditions = {c["type"]: c["status"] for c in run["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions["DataReady"] == "True" and conditions["Failed"] == "False"
    export = cluster.wait_phase("ModelExport", "tiny-llama-export", "Succeeded", 300)
    artifact = export["artifacts"][0]
    assert artifact["validation"]["passed"] and artifact["uri"].startswith("pvc://llmtrain-storage/")
    if cluster.volumes:  # the PVCs are directories here (on a real cluster, the deployment check above)
        assert (cluster.volumes / artifact["uri"][len("pvc://") :] / "model.safetensors").is_file()
    progress = json.loads(cluster.get("ConfigMap", "tiny-llama-progress")["data"]["progress.json"])
    assert progress["step"] == 30  # the trainer patched its own ConfigMap over HTTP
    wanted = {"Ingested", "CheckpointSaved", "Trained", "Exported"}  # posted just after the status they report
    wanted |= {f"{stage}Started" for stage in ("Scan", "Dedup", "Cluster", "Tokenizer", "Encode", "Manifest")}
    reasons = lambda: {e["reason"] for e in cluster.store.list("Event", NAMESPACE)}  # noqa: E731
    cluster.wait(lambda: wanted <= reasons(), 10, f"missing Events: {wanted - reasons()}")


def test_mixture_example_succeeds_with_each_sources_figures(cluster):
    """Two DataSources (the second importing the first's tokenizer) trained as a 3:1 mixture, then exported."""
    cluster.start_operator()
    cluster.apply(examples.in_cluster(examples.shrink(examples.load("mixture.yaml"))))
    run = cluster.wait_phase("TrainingRun", "tiny-llama-mixture", "Succeeded", 420)
    sources = run["sources"]
    assert [(s["name"], s["weight"]) for s in sources] == [("comedies", 0.75), ("tragedies", 0.25)]
    assert sum(s["tokensSeen"] for s in sources) == run["tokensSeen"] > 0 and all(s["valLoss"] > 0 for s in sources)
    assert run["progress"] == "20/20"
    cluster.wait_phase("ModelExport", "tiny-llama-mixture-export", "Succeeded", 300)


def init_condition(cluster, name: str, reason: str) -> dict | None:
    """The TrainingRun's InitReady condition when its reason is `reason`."""
    conditions = (cluster.get("TrainingRun", name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "InitReady" and c["reason"] == reason), None)


@pytest.mark.slow  # ~25 s: two trainings and two exports (the cluster tier runs it too, behind a kubeconfig)
def test_continued_pretraining_example_waits_for_the_export_then_starts_from_it(cluster):
    cluster.start_operator()
    cluster.apply(examples.in_cluster(examples.shrink(examples.load("continued-pretraining.yaml"))))
    waiting_for_init = lambda: init_condition(cluster, "tiny-llama-continued", "WaitingForInit")  # noqa: E731
    waiting = cluster.wait(waiting_for_init, 300, "the continued run never waited for the base run's export")
    assert "tiny-llama-base-export" in waiting["message"]
    assert cluster.get("Job", naming.train_job("tiny-llama-continued")) == {}  # not before its weights are there
    export = cluster.wait_phase("ModelExport", "tiny-llama-base-export", "Succeeded", 480)
    weights = next(a["uri"] for a in export["artifacts"] if a["format"] == "safetensors")
    run = cluster.wait_phase("TrainingRun", "tiny-llama-continued", "Succeeded", 300)
    assert run["initializedFrom"] == f"{weights.rstrip('/')} (Hugging Face Llama)" and run["progress"] == "20/20"
    conditions = {c["type"]: c["status"] for c in run["conditions"]}
    assert conditions["InitReady"] == "True" and conditions["Succeeded"] == "True"
    cluster.wait_phase("ModelExport", "tiny-llama-continued-export", "Succeeded", 300)

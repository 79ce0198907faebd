"""The real operator against the emulated API server or a real cluster: apply the example run, watch it succeed."""

from __future__ import annotations

import json

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

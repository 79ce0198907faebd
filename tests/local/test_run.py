"""`llmtrain run` end to end on a small run file: DataSource -> TrainingRun -> ModelExport, Ctrl-C, resume, get."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from support.paths import ROOT

LLMTRAIN = [sys.executable, "-m", "llmtrain.cli"]


def small_run(tmp_path: Path) -> Path:
    documents = list(yaml.safe_load_all((ROOT / "examples" / "run.yaml").read_text()))
    documents[0]["spec"]["sources"][0]["local"]["path"] = str(ROOT / "examples" / "data" / "shakespeare" / "*.txt")
    training = documents[1]["spec"]
    training["model"].update(layers=2, hiddenSize=64, heads=4, kvHeads=2, intermediateSize=192, maxSeqLen=64)
    training["training"].update(maxSteps=40, microBatchSize=4)
    training["training"]["scheduler"]["warmupSteps"] = 4
    training["validation"] = {"everySteps": 10, "batches": 2}
    training["checkpointing"] = {"everySteps": 5, "keepLast": 2, "keepBest": 1}
    documents[2]["spec"]["formats"] = ["safetensors"]
    documents[2]["spec"]["quantization"] = "none"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def state(workdir: Path, kind: str, name: str) -> dict:
    path = workdir / "state" / kind / "default" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_run_interrupt_resume_and_get(tmp_path):
    run_file, workdir = small_run(tmp_path), tmp_path / "work"
    env = {**os.environ, "LLMTRAIN_PEAK_FLOPS": "1e11"}
    first = subprocess.Popen(
        [*LLMTRAIN, "run", "-f", str(run_file), "--workdir", str(workdir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # Ctrl-C once the first checkpoint is in the status
        checkpoint = (state(workdir, "TrainingRun", "tiny-llama").get("status") or {}).get("latestCheckpoint")
        if checkpoint or first.poll() is not None:
            break
        time.sleep(0.2)
    assert checkpoint, first.communicate()[0][-3000:]
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output[-3000:]
    assert "rerun the same command to resume" in output
    interrupted = state(workdir, "TrainingRun", "tiny-llama")["status"]
    assert interrupted["phase"] != "Succeeded"

    second = subprocess.run(
        [*LLMTRAIN, "run", "-f", str(run_file), "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    status = state(workdir, "TrainingRun", "tiny-llama")["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "40/40" and status["restarts"] == 0
    assert status["latestCheckpoint"]["step"] == 40 and status["bestCheckpoint"]["valLoss"] > 0
    logs = sorted((workdir / "pods" / "default").glob("tiny-llama-train-0-*/log"))
    assert len(logs) == 2 and any('"Resumed"' in log.read_text() for log in logs)
    export = state(workdir, "ModelExport", "tiny-llama-export")["status"]
    assert export["phase"] == "Succeeded" and export["checkpointStep"] == 40
    assert export["artifacts"][0]["validation"]["passed"] is True
    assert Path(export["artifacts"][0]["uri"], "model.safetensors").exists()
    data = state(workdir, "DataSource", "shakespeare")["status"]
    assert data["stats"]["documentsOut"] == 12 and Path(data["shardsUri"], "manifest.json").exists()
    events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
    assert {"Ingested", "CheckpointSaved", "Trained", "Exported"} <= {e["reason"] for e in events}

    table = subprocess.run(
        [*LLMTRAIN, "get", "tr", "--workdir", str(workdir), "-o", "wide"], capture_output=True, text=True, check=True
    ).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "PHASE",
        "STEP",
        "LOSS",
        "TOK/S",
        "ETA",
        "AGE",
        "NODES",
        "GPUS",
        "CHECKPOINT",
        "MESSAGE",
    ]
    assert row.split()[:3] == ["tiny-llama", "Succeeded", "40/40"]
    listing = json.loads(
        subprocess.run(
            [*LLMTRAIN, "get", "--workdir", str(workdir), "-o", "json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [i["kind"] for i in listing["items"]] == ["DataSource", "TrainingRun", "ModelExport"]


def test_bad_run_file_names_the_field(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text((ROOT / "examples" / "run.yaml").read_text().replace("maxSteps: 300", "maxSteps: -1"))
    result = subprocess.run(
        [*LLMTRAIN, "run", "-f", str(bad), "--workdir", str(tmp_path / "w")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "spec.training.maxSteps" in result.stderr

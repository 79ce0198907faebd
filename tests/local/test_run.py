"""`llmtrain run` end to end on a small run file: DataSource -> TrainingRun -> ModelExport, Ctrl-C, resume, get."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support import examples
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


@pytest.mark.timeout(1200)  # the first run (up to 360 s) and the resumed one (up to 600 s)
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
    if not checkpoint:
        first.kill()
        pytest.fail(f"no checkpoint in the status: {first.communicate(timeout=60)[0][-3000:]}")
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
        [*LLMTRAIN, "get", "tr", "--workdir", str(workdir), "-o", "wide"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
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
            [*LLMTRAIN, "get", "--workdir", str(workdir), "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    )
    assert [i["kind"] for i in listing["items"]] == ["DataSource", "TrainingRun", "ModelExport"]


def test_bad_run_file_names_the_field(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text((ROOT / "examples" / "run.yaml").read_text().replace("maxSteps: 300", "maxSteps: -1"))
    result = subprocess.run(
        [*LLMTRAIN, "run", "-f", str(bad), "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "spec.training.maxSteps" in result.stderr


STDIN_RUN = """\
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  AWS_ACCESS_KEY_ID: from-stdin
---
apiVersion: llmtrain.dev/v1alpha1
kind: DataSource
metadata:
  name: corpus
spec:
  sources:
    - local:
        path: missing/*.txt
  format: txt
"""


def run_stdin(text: str, workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LLMTRAIN, "run", "-f", "-", "--workdir", str(workdir)],
        input=text,
        capture_output=True,
        text=True,
        cwd=workdir.parent,
        timeout=120,
    )


def test_run_reads_stdin_once_and_applies_every_document(tmp_path):
    """`-f -` is read once: the Secret (applied from the same documents as the resources) is there, and
    the DataSource got past loading (its ingest refused the missing input, exit 1 for the run)."""
    result = run_stdin(STDIN_RUN, tmp_path / "w")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    secret = state(tmp_path / "w", "Secret", "creds")
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "from-stdin"}
    ingest = state(tmp_path / "w", "DataSource", "corpus")["status"]
    assert "no input files, objects or URLs matched" in ingest["message"]


def test_a_spec_error_on_stdin_is_reported_from_its_content(tmp_path):
    result = run_stdin(STDIN_RUN.replace("format: txt", "format: txt\n  workers: -1"), tmp_path / "w")
    assert result.returncode == 2 and "error: <stdin>" in result.stderr and "spec.workers" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_work_directory_is_exit_2_with_one_line(tmp_path):
    """A --workdir that is a file, or holds a state file that is not JSON: exit 2 and one line naming it,
    for `run` and `get` alike (not a traceback and exit 1)."""
    (tmp_path / "file").write_text("not a directory")
    result = run_stdin(STDIN_RUN, tmp_path / "file")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"error: {tmp_path / 'file'}: not a directory; --workdir names the run's work directory"
    ]
    corrupt = tmp_path / "w" / "state" / "DataSource" / "default" / "corpus.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"kind": "DataSource", "metadata": ')  # a write cut short by hand
    for command in (["run", "-f", "-"], ["get"]):
        result = subprocess.run(
            [*LLMTRAIN, *command, "--workdir", str(tmp_path / "w")],
            input=STDIN_RUN,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr[-3000:]
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: {corrupt}: not a state file of llmtrain run (JSONDecodeError")


def test_run_ingests_a_datasource_in_stages_as_local_processes(tmp_path):
    """workers: 2 in the embedded default: each ingest stage is a Job whose pods are local processes, and
    the dataset holds the same tokens as a one-process ingest."""
    documents = list(yaml.safe_load_all(small_run(tmp_path).read_text()))[:1]
    documents[0]["spec"]["workers"] = 2
    documents[0]["spec"]["output"]["uri"] = str(tmp_path / "staged")
    run_file, workdir = tmp_path / "data.yaml", tmp_path / "work"
    run_file.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    ran = subprocess.run(
        [*LLMTRAIN, "run", "-f", str(run_file), "--workdir", str(workdir)], capture_output=True, text=True, timeout=600
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    data = state(workdir, "DataSource", "shakespeare")["status"]
    assert data["phase"] == "Succeeded" and data["stats"]["documentsOut"] == 12
    pods = {p.name.rsplit("-", 1)[0] for p in (workdir / "pods" / "default").iterdir()}
    tasks = ("ingest-0", "ingest-1", "dedup-0", "dedup-1", "cluster-0", "tokenizer-0", "encode-0", "encode-1")
    assert {f"shakespeare-{task}" for task in (*tasks, "manifest-0")} <= pods, sorted(pods)
    one = subprocess.run(
        [*LLMTRAIN, "ingest", "-f", str(run_file), "--output", str(tmp_path / "one"), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    def tokens(output: Path) -> dict[str, bytes]:
        manifest = json.loads((output / "manifest.json").read_text())
        return {
            split: b"".join((output / s["path"]).read_bytes() for s in listed["shards"])
            for split, listed in manifest["splits"].items()
        }

    assert tokens(tmp_path / "staged") == tokens(tmp_path / "one")


def run_example(tmp_path: Path, name: str) -> Path:
    """`llmtrain run` on examples/`name`, shrunk to seconds; every resource Succeeded. The work directory."""
    run_file, workdir = tmp_path / name, tmp_path / "work"
    documents = examples.local_paths(examples.shrink(examples.load(name)))
    run_file.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    ran = subprocess.run(
        [*LLMTRAIN, "run", "-f", str(run_file), "--workdir", str(workdir)], capture_output=True, text=True, timeout=600
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    for document in documents:
        phase = (state(workdir, document["kind"], document["metadata"]["name"]).get("status") or {}).get("phase")
        assert phase == "Succeeded", (document["kind"], document["metadata"]["name"], phase)
    return workdir


@pytest.mark.slow  # ~30 s; the default tier runs the same example through the operator
def test_continued_pretraining_example_starts_from_the_base_models_export(tmp_path):
    workdir = run_example(tmp_path, "continued-pretraining.yaml")
    export = state(workdir, "ModelExport", "tiny-llama-base-export")["status"]
    weights = next(a["uri"] for a in export["artifacts"] if a["format"] == "safetensors")
    status = state(workdir, "TrainingRun", "tiny-llama-continued")["status"]
    assert status["initializedFrom"] == f"{weights} (Hugging Face Llama)"
    assert status["step"] == status["totalSteps"] == 20 and status["progress"] == "20/20"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["InitReady"] == "True" and conditions["DataReady"] == "True"


@pytest.mark.slow  # ~16 s; the default tier runs the same example through the operator
def test_mixture_example_reports_each_data_source(tmp_path):
    workdir = run_example(tmp_path, "mixture.yaml")
    status = state(workdir, "TrainingRun", "tiny-llama-mixture")["status"]
    sources = {s["name"]: s for s in status["sources"]}
    assert [s["name"] for s in status["sources"]] == ["comedies", "tragedies"]
    assert sources["comedies"]["weight"] == 0.75 and sources["tragedies"]["weight"] == 0.25
    assert sum(s["tokensSeen"] for s in status["sources"]) == status["tokensSeen"] > 0
    assert all(s["valLoss"] > 0 for s in status["sources"])
    assert sources["comedies"]["tokensSeen"] > sources["tragedies"]["tokensSeen"]
    tragedies = state(workdir, "DataSource", "tragedies")["status"]
    comedies = state(workdir, "DataSource", "comedies")["status"]
    assert tragedies["stats"]["documentsOut"] == 6 and comedies["stats"]["documentsOut"] == 5

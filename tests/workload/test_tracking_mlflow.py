"""Metrics that outlive the pod, against a real MLflow tracking server on 127.0.0.1 (`make mlflow`): a tiny
run paused at step 8 and resumed on a new "pod" (a fresh metrics folder) to step 16 keeps one metrics.jsonl
and one MLflow run across both; `llmtrain report` draws it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from workload.test_train import dataset  # noqa: F401 - a fixture

from llmtrain.train import tracking
from llmtrain.train.mlflow_rest import MlflowRest
from llmtrain.train.tracking import MlflowTracker
from support.paths import ROOT
from support.tiny_run import tiny_run

MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """`mlflow server` with a sqlite store in a temp folder; stopped by its process group (its own PID)."""
    if not MLFLOW.exists():
        pytest.skip("no MLflow server to test against: run `make mlflow` (it builds .venv-mlflow)")
    directory = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{directory}/mlflow.db"]
    command += ["--default-artifact-root", str(directory / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1"]
    log = (directory / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (directory / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def get(uri: str, endpoint: str, **query: str) -> dict:
    """A GET on the server's REST API, with urllib alone (not the client under test)."""
    url = f"{uri}/api/2.0/mlflow/{endpoint}?" + "&".join(f"{k}={v}" for k, v in query.items())
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def history(uri: str, run_id: str, key: str) -> list[tuple[int, object]]:
    found = get(uri, "metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
    return sorted((m["step"], m["value"]) for m in found)


def train(spec: Path, data: Path, checkpoints: Path, metrics: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "llmtrain.cli", "train", "-f", str(spec), "--data", str(data)]
    command += ["--checkpoints", str(checkpoints), "--metrics-dir", str(metrics), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


@pytest.mark.timeout(900)
def test_a_resumed_run_keeps_its_metrics_and_its_mlflow_run(tmp_path, dataset, mlflow_server):  # noqa: F811
    spec = tmp_path / "run.yaml"
    tracked = {"mlflow": {"uri": mlflow_server, "experiment": "issue-19"}}
    spec.write_text(yaml.safe_dump(tiny_run("tiny", "corpus", 16, tracking=tracked)))
    checkpoints = tmp_path / "ckpt"
    paused = train(spec, dataset, checkpoints, tmp_path / "pod-1", "--stop-at-step", "8")
    assert paused.returncode == 0, paused.stderr[-3000:]
    stored = checkpoints / "metrics"
    assert steps(stored / "metrics.jsonl") == list(range(1, 9)) and list((stored / "tensorboard").iterdir())
    run_id = json.loads((stored / "mlflow-run.json").read_text())["runId"]
    run = get(mlflow_server, "runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "KILLED" and run["info"]["run_name"] == "tiny"  # paused: a rerun continues
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["training.maxSteps"] == "16" and params["model.hiddenSize"] == "64" and params["data.corpus"] == "1.0"

    resumed = train(spec, dataset, checkpoints, tmp_path / "pod-2")  # a new pod: its scratch folder is empty
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps(stored / "metrics.jsonl") == list(range(1, 17)) == steps(tmp_path / "pod-2" / "metrics.jsonl")
    assert len(list((stored / "tensorboard").iterdir())) == 2  # each pod's event file
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "best",
        "latest",
        "metrics",
        "step-00000008",
        "step-00000016",
    ]
    assert json.loads((stored / "mlflow-run.json").read_text())["runId"] == run_id
    assert get(mlflow_server, "runs/get", run_id=run_id)["run"]["info"]["status"] == "FINISHED"
    assert [s for s, _ in history(mlflow_server, run_id, "loss")] == list(range(1, 17))
    assert [s for s, _ in history(mlflow_server, run_id, "val/valLoss")] == [8, 16]
    losses = {json.loads(line)["step"]: json.loads(line)["loss"] for line in (stored / "metrics.jsonl").open()}
    assert dict(history(mlflow_server, run_id, "loss")) == pytest.approx(losses)
    experiments = get(mlflow_server, "experiments/get-by-name", experiment_name="issue-19")["experiment"]
    assert experiments["experiment_id"] == get(mlflow_server, "runs/get", run_id=run_id)["run"]["info"]["experiment_id"]

    page = tmp_path / "report.html"
    command = [sys.executable, "-m", "llmtrain.cli", "report", "tiny", "--metrics", str(stored / "metrics.jsonl")]
    done = subprocess.run([*command, "-o", str(page)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert html.count('data-series="loss"') == 1 and 'data-chart="valLoss"' in html
    loss_points = html.split('data-series="loss"', 1)[1].split('points="', 1)[1].split('"', 1)[0].split()
    assert len(loss_points) == 16


def test_the_tracker_against_the_real_server(mlflow_server, tmp_path):
    """Non-finite values, per-source keys, a refused param change and the final status, as MLflow takes them."""
    record = str(tmp_path / "mlflow-run.json")
    rest = MlflowRest(mlflow_server, delays=(0.1, 0.2))
    first = MlflowTracker(
        rest, "tracker", "direct", {"training.lr": "0.001"}, {"llmtrain.dev/trainingrun": "direct"}, record
    )
    first.log(1, {"loss": 4.0, "source/web/valLoss": 4.5})
    first.log(2, {"loss": float("nan"), "gradNorm": float("inf")})
    assert first.finish(tracking.FAILED) is True
    again = MlflowTracker(rest, "tracker", "direct", {"training.lr": "0.002"}, {}, record)  # a changed param: warned
    again.log(3, {"loss": 3.0})
    assert again.finish(tracking.FINISHED) is True and again.run_id == first.run_id
    run = get(mlflow_server, "runs/get", run_id=first.run_id)["run"]
    assert run["info"]["status"] == "FINISHED" and {p["key"]: p["value"] for p in run["data"]["params"]} == {
        "training.lr": "0.001"
    }
    assert history(mlflow_server, first.run_id, "loss") == [(1, 4.0), (2, "NaN"), (3, 3.0)]
    ((step, value),) = history(mlflow_server, first.run_id, "gradNorm")  # sent as "Infinity"
    assert step == 2 and float(value) == sys.float_info.max  # MLflow's SQL store keeps infinity as the largest double
    assert history(mlflow_server, first.run_id, "source/web/valLoss") == [(1, 4.5)]


def test_an_unreachable_tracking_server_never_fails_or_stalls_training(tmp_path, dataset):  # noqa: F811
    spec = tmp_path / "run.yaml"
    tracked = {"mlflow": {"uri": f"http://127.0.0.1:{free_port()}", "experiment": "nowhere"}}
    spec.write_text(yaml.safe_dump(tiny_run("tiny", "corpus", 8, tracking=tracked)))
    started = time.monotonic()
    done = train(spec, dataset, tmp_path / "ckpt", tmp_path / "pod")
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started < 150  # the end waits at most 15 s for the tracking server
    # Whether the first failure is logged before the end depends on how fast training runs (the first call
    # retries for ~15 s); the end's account of what never arrived does not.
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"time"')]
    (incomplete,) = [record for record in records if "incomplete" in record["message"]]
    assert incomplete["message"] == "MLflow tracking incomplete" and incomplete["run"] == "not created"
    assert incomplete["status"] == "FINISHED" and incomplete["dropped"] > 0
    assert steps(tmp_path / "ckpt" / "metrics" / "metrics.jsonl") == list(range(1, 9))  # the files do not wait for it
    assert not (tmp_path / "ckpt" / "metrics" / "mlflow-run.json").exists()

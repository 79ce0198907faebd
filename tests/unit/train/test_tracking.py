"""MLflow tracking against a fake tracking server: the run's life, retries, failures that never stall
training, a resumed run continuing its MLflow run, credentials from a Secret only."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from llmtrain import exitcodes
from llmtrain.api import TrainingRun, parse_resource
from llmtrain.train import mlflow_rest, tracking
from llmtrain.train.mlflow_rest import MlflowError, MlflowRest
from llmtrain.train.tracking import MlflowTracker, open_tracker, terminal_status
from support.fake_mlflow import FakeMlflow, serve
from support.tiny_run import tiny_run

FAST = (0.01, 0.02)  # retry delays for the tests


@pytest.fixture
def fake():
    server = FakeMlflow()
    with serve(server) as uri:
        server.uri = uri
        yield server


def tracker(uri: str, record: str | None, params=None, **options) -> MlflowTracker:
    rest = MlflowRest(uri, options.pop("auth", None), timeout=2.0, delays=options.pop("delays", FAST))
    return MlflowTracker(
        rest, "exp", "tiny", params or {"model.layers": "2"}, {"llmtrain.dev/trainingrun": "tiny"}, record, **options
    )


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_run_is_created_with_params_metrics_and_its_final_status(fake, tmp_path, monkeypatch):
    secrets = tmp_path / "secrets"
    (secrets / "mlflow").mkdir(parents=True)
    (secrets / "mlflow" / "MLFLOW_TRACKING_TOKEN").write_text("s3cr3t-token\n")
    monkeypatch.setenv("LLMTRAIN_SECRETS_DIR", str(secrets))
    spec = {"mlflow": {"uri": fake.uri, "experiment": "llama", "credentialsSecretRef": {"name": "mlflow"}}}
    run = parse_resource(tiny_run("tiny", "corpus", 8, tracking=spec))
    assert isinstance(run, TrainingRun)
    record = tmp_path / "ckpt" / "metrics" / "mlflow-run.json"
    tracked = open_tracker(run, str(record))
    assert tracked is not None
    tracked.log(1, {"loss": 5.5, "lr": 3e-3, "source/corpus/valLoss": 5.25})
    tracked.log(2, {"loss": float("nan")})  # a diverged step: MLflow's NaN, not a refused batch
    assert tracked.finish(tracking.FAILED) is True and tracked.dropped == 0
    ((run_id, stored),) = fake.runs.items()
    assert fake.experiments == {"llama": "1"} and stored["info"]["run_name"] == "tiny"
    assert stored["info"]["status"] == "FAILED"
    params = stored["params"]
    assert params["model.layers"] == "2" and params["training.maxSteps"] == "8" and params["data.corpus"] == "1.0"
    assert params["training.optimizer.betas"] == "[0.9, 0.95]" and params["training.precision"] == "fp32"
    assert fake.metrics(run_id, "loss") == [(1, 5.5), (2, "NaN")]
    assert fake.metrics(run_id, "source/corpus/valLoss") == [(1, 5.25)]
    assert {auth for _, auth, _ in fake.calls} == {"Bearer s3cr3t-token"}
    assert json.loads(record.read_text()) == {"trackingUri": fake.uri, "experimentId": "1", "runId": run_id}


def test_no_tracker_without_spec_tracking():
    assert open_tracker(parse_resource(tiny_run("tiny", "corpus", 8)), None) is None


def test_5xx_answers_are_retried_and_nothing_is_lost(fake, tmp_path):
    fake.fail("runs/create", 503, 502)
    fake.fail("runs/log-batch", 500)  # the params' call
    tracked = tracker(fake.uri, str(tmp_path / "run.json"))
    for step in range(1, 6):
        tracked.log(step, {"loss": 1.0 / step})
    assert tracked.finish(tracking.FINISHED) is True
    ((run_id, stored),) = fake.runs.items()
    assert [s for s, _ in fake.metrics(run_id, "loss")] == [1, 2, 3, 4, 5] and stored["params"] == {"model.layers": "2"}
    assert [e for e, _, _ in fake.calls].count("runs/create") == 3 and stored["info"]["status"] == "FINISHED"


def test_a_refused_batch_is_dropped_and_counted_and_later_ones_arrive(fake, tmp_path, caplog):
    tracked = tracker(fake.uri, None)
    wait_for(lambda: tracked.run_id is not None and [e for e, _, _ in fake.calls].count("runs/log-batch") == 1)
    fake.fail("runs/log-batch", 400)  # permanent: not retried
    tracked.log(1, {"loss": 2.0, "lr": 0.1})
    wait_for(lambda: tracked.dropped == 2)
    tracked.log(2, {"loss": 1.5})
    with caplog.at_level(logging.WARNING, "llmtrain.train"):
        assert tracked.finish(tracking.FINISHED) is False  # something was lost: said at the end
    assert (
        fake.metrics(tracked.run_id, "loss") == [(2, 1.5)] and fake.runs[tracked.run_id]["info"]["status"] == "FINISHED"
    )
    assert any(getattr(r, "dropped", None) == 2 for r in caplog.records)


def test_an_unreachable_server_never_stalls_training(tmp_path, caplog):
    tracked = tracker(f"http://127.0.0.1:{free_port()}", str(tmp_path / "run.json"), finish_timeout=1.0, max_queued=50)
    started = time.monotonic()
    for step in range(1, 201):  # more steps than the queue holds
        tracked.log(step, {"loss": 1.0})
    logging_took = time.monotonic() - started
    with caplog.at_level(logging.WARNING, "llmtrain.train"):
        delivered = tracked.finish(tracking.FINISHED)
    assert logging_took < 0.5 and time.monotonic() - started < 3.0
    assert delivered is False and tracked.dropped >= 150  # the queue's overflow at least, counted
    assert not (tmp_path / "run.json").exists()
    assert any("dropped" in r.getMessage() or hasattr(r, "dropped") for r in caplog.records)


def test_the_end_counts_a_batch_still_retrying_as_not_arrived(tmp_path, caplog):
    """The first call fails fast, the batch after it is still retrying when the end's time runs out: the
    warning's count covers it (once it said 0 with every value lost)."""
    retrying, release = threading.Event(), threading.Event()
    calls = []

    def sleep(_: float) -> None:
        calls.append(_)
        if len(calls) > 1:  # the first call's retry passes at once; the batch's blocks
            retrying.set()
            release.wait(10)

    rest = MlflowRest(f"http://127.0.0.1:{free_port()}", timeout=2.0, delays=(0.01,), sleep=sleep)
    tracked = MlflowTracker(rest, "exp", "tiny", {}, {}, str(tmp_path / "run.json"), finish_timeout=0.3)
    for step in (1, 2, 3):
        tracked.log(step, {"loss": 1.0, "lr": 0.1})
    try:
        retrying.wait(5)
        with caplog.at_level(logging.WARNING, "llmtrain.train"):
            assert tracked.finish(tracking.FINISHED) is False
    finally:
        release.set()
    (incomplete,) = [r for r in caplog.records if r.getMessage() == "MLflow tracking incomplete"]
    assert incomplete.dropped == 6 and incomplete.run == "not created"


def test_a_slow_server_fills_the_bounded_queue_and_the_overflow_is_counted(fake):
    fake.delay = 0.2
    tracked = tracker(fake.uri, None, max_queued=3, finish_timeout=0.5)
    for step in range(1, 21):
        tracked.log(step, {"loss": 1.0})
    assert tracked.dropped >= 16  # 20 steps, 3 waiting, at most one being sent
    tracked.finish(tracking.KILLED)


def test_a_resumed_run_continues_the_same_mlflow_run(fake, tmp_path, caplog):
    record = str(tmp_path / "ckpt" / "metrics" / "mlflow-run.json")
    first = tracker(fake.uri, record, params={"training.maxSteps": "8", "model.layers": "2"})
    first.log(1, {"loss": 3.0})
    assert first.finish(terminal_status(exitcodes.RETRYABLE, False))
    ((run_id, stored),) = fake.runs.items()
    assert stored["info"]["status"] == "KILLED"
    second = tracker(fake.uri, record, params={"training.maxSteps": "16", "model.layers": "2", "model.heads": "4"})
    wait_for(lambda: fake.runs[run_id]["info"]["status"] == "RUNNING")
    second.log(2, {"loss": 2.0})
    with caplog.at_level(logging.WARNING, "llmtrain.train"):
        assert second.finish(tracking.FINISHED)
    assert list(fake.runs) == [run_id] and second.run_id == run_id
    assert fake.metrics(run_id, "loss") == [(1, 3.0), (2, 2.0)] and fake.runs[run_id]["info"]["status"] == "FINISHED"
    assert fake.runs[run_id]["params"] == {"training.maxSteps": "8", "model.layers": "2", "model.heads": "4"}
    assert any("changed" in r.getMessage() for r in caplog.records)  # maxSteps raised: said, not fatal


def test_a_recorded_run_gone_from_the_server_starts_a_new_one(fake, tmp_path):
    record = tmp_path / "mlflow-run.json"
    record.write_text(json.dumps({"trackingUri": fake.uri, "experimentId": "1", "runId": "deleted"}))
    tracked = tracker(fake.uri, str(record))
    assert tracked.finish(tracking.FINISHED)
    (run_id,) = fake.runs
    assert json.loads(record.read_text())["runId"] == run_id != "deleted"


@pytest.mark.parametrize(
    ("code", "last", "status"),
    [
        (exitcodes.OK, True, "FINISHED"),
        (exitcodes.OK, False, "KILLED"),  # paused at --stop-at-step
        (exitcodes.RETRYABLE, False, "KILLED"),  # SIGTERM
        (exitcodes.DIVERGED, False, "FAILED"),
        (None, False, "FAILED"),  # an exception
    ],
)
def test_terminal_status(code, last, status):
    assert terminal_status(code, last) == status


def test_credentials_come_from_the_secret_and_are_never_logged(fake, tmp_path, monkeypatch, caplog):
    secret = tmp_path / "mlflow-basic"
    secret.mkdir()
    (secret / "MLFLOW_TRACKING_USERNAME").write_text("alice")
    (secret / "MLFLOW_TRACKING_PASSWORD").write_text("pa55word")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LLMTRAIN_SECRETS_DIR", str(tmp_path))
    assert tracking.credentials("mlflow-basic") == "Basic YWxpY2U6cGE1NXdvcmQ="  # alice:pa55word
    with caplog.at_level(logging.WARNING, "llmtrain.train"):
        assert tracking.credentials("empty") is None
    assert "neither MLFLOW_TRACKING_TOKEN" in caplog.text
    fake.fail("runs/create", 401)
    tracked = tracker(fake.uri, None, auth=tracking.credentials("mlflow-basic"))
    with caplog.at_level(logging.DEBUG):
        tracked.log(1, {"loss": 1.0})
        assert tracked.finish(tracking.FINISHED) is True  # the run was created at the next try
    logged = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert "pa55word" not in logged and "YWxpY2U6cGE1NXdvcmQ" not in logged
    assert "HTTP 401" in logged  # the failure itself is said


def test_rest_retries_what_may_pass_and_nothing_else(fake):
    slept: list[float] = []
    rest = MlflowRest(fake.uri, delays=(0.5, 1.0, 2.0), sleep=slept.append)
    fake.fail("experiments/create", 503, 429)
    assert rest.post("experiments/create", {"name": "e"}) == {"experiment_id": "1"} and slept == [0.5, 1.0]
    with pytest.raises(MlflowError) as refused:
        rest.get("experiments/get-by-name", experiment_name="nope")
    assert refused.value.code == "RESOURCE_DOES_NOT_EXIST" and not refused.value.retryable and slept == [0.5, 1.0]
    down = MlflowRest(f"http://127.0.0.1:{free_port()}", delays=(0.5, 1.0), sleep=slept.append)
    with pytest.raises(MlflowError, match="unreachable") as unreachable:
        down.get("experiments/get-by-name", experiment_name="e")
    assert unreachable.value.retryable and slept == [0.5, 1.0, 0.5, 1.0]


def test_a_redirect_is_refused_so_the_credentials_go_nowhere_else(fake):
    elsewhere = FakeMlflow()
    with serve(elsewhere) as other:
        fake.redirect_to = other
        rest = MlflowRest(fake.uri, auth="Bearer secret-token", delays=(0.5,), sleep=lambda _: None)
        with pytest.raises(MlflowError, match="redirects") as refused:
            rest.get("experiments/get-by-name", experiment_name="e")
    assert not refused.value.retryable and elsewhere.calls == []


def test_an_oversized_answer_is_refused_unread(fake, monkeypatch):
    monkeypatch.setattr(mlflow_rest, "MAX_ANSWER_BYTES", 1000)
    fake.padding = 5000
    rest = MlflowRest(fake.uri, delays=(), sleep=lambda _: None)
    with pytest.raises(MlflowError, match="larger than") as refused:
        rest.post("experiments/create", {"name": "e"})
    assert not refused.value.retryable
    fake.padding = 0
    assert rest.get("experiments/get-by-name", experiment_name="e")["experiment"]["name"] == "e"


def test_an_answer_that_is_not_mlflows_is_a_failure_not_a_dead_tracker(fake):
    fake.garbled.add("runs/create")
    tracked = tracker(fake.uri, None)
    tracked.log(1, {"loss": 1.0})
    wait_for(lambda: tracked.dropped == 1)
    fake.garbled.clear()
    tracked.log(2, {"loss": 0.5})
    assert tracked.finish(tracking.FINISHED) is False  # step 1 was lost, and it says so
    (run_id,) = [r for r in fake.runs if fake.runs[r]["metrics"]]
    assert fake.metrics(run_id, "loss") == [(2, 0.5)] and fake.runs[run_id]["info"]["status"] == "FINISHED"

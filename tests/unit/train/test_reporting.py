"""When the trainer reports: the progress report's throttle and forced writes, the log and metrics schedule,
tokens/s without the pauses."""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch

from llmtrain.api.trainingrun import AlertsSpec
from llmtrain.core.progress import Alert
from llmtrain.train import progress
from llmtrain.train.anomalies import AnomalyDetector
from llmtrain.train.distributed import World
from llmtrain.train.progress import FileSink, Reporter
from llmtrain.train.reporting import StepReporter, Throughput
from llmtrain.train.state import TrainState
from llmtrain.train.step import StepOutcome

#: The report's keys as the trainer wrote them before the report was typed (version 1).
WIRE_KEYS = {
    "version", "run", "phase", "step", "totalSteps", "tokensSeen", "loss", "valLoss", "perplexity",
    "tokensPerSecond", "mfu", "eta", "latestCheckpoint", "bestCheckpoint", "alerts", "startedAt", "updatedAt",
    "sources", "initializedFrom",  # added in version 1 (issue 18): readers ignore keys they do not know
}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorded:
    """A metrics sink that keeps what it is given."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []
        self.sources: list[tuple[int, list | None]] = []
        self.closed = False

    def log(self, step: int, values: dict, sources: list | None = None) -> None:
        self.logged.append((step, values))
        self.sources.append((step, sources))

    def close(self) -> None:
        self.closed = True


def read(path) -> dict:
    return json.loads(path.read_text())


def test_the_first_report_is_written_on_a_machine_up_for_seconds(tmp_path, monkeypatch):
    """Never written is not time zero: with monotonic() at 3 s and a 60 s throttle, the first report goes out."""
    monkeypatch.setattr(progress.time, "monotonic", lambda: 3.0)
    reporter = Reporter("run", 10, [FileSink(str(tmp_path / "p.json"))], min_interval=60)
    reporter.update(step=1)
    assert read(tmp_path / "p.json")["step"] == 1
    reporter.update(step=2)
    assert read(tmp_path / "p.json")["step"] == 1  # the second is throttled


def test_throttled_until_the_interval_passes_and_forced_writes_go_at_once(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    reporter = Reporter("run", 10, [FileSink(str(tmp_path / "p.json"))], min_interval=5)
    reporter.update(step=1)
    clock.now += 4.9
    reporter.update(step=2)
    assert read(tmp_path / "p.json")["step"] == 1
    reporter.update(force=True, phase="Paused")
    assert read(tmp_path / "p.json")["phase"] == "Paused"
    clock.now += 4.9
    reporter.update(step=3)
    assert read(tmp_path / "p.json")["step"] == 2  # the interval counts from the forced write
    clock.now += 0.2
    reporter.update(step=4)
    assert read(tmp_path / "p.json")["step"] == 4


def test_the_wire_format_is_version_1_as_before(tmp_path):
    reporter = Reporter("tiny", 40, [FileSink(str(tmp_path / "p.json"))])
    reporter.update(step=3, tokens_seen=1536, loss=4.25, tokens_per_second=5700, mfu=0.1234, eta="0m32s")
    report = read(tmp_path / "p.json")
    assert set(report) == WIRE_KEYS  # no `failure` until there is one
    assert report["version"] == 1 and report["run"] == "tiny" and report["totalSteps"] == 40
    assert (report["step"], report["tokensSeen"], report["loss"], report["tokensPerSecond"]) == (3, 1536, 4.25, 5700)
    assert report["phase"] == "Running" and report["alerts"] == [] and report["latestCheckpoint"] is None
    assert report["sources"] == [] and report["initializedFrom"] is None
    assert report["startedAt"].endswith("Z") and report["updatedAt"].endswith("Z")
    reporter.update(force=True, phase="Failed", failure={"reason": "NonFiniteLoss", "message": "loss is nan"})
    assert read(tmp_path / "p.json")["failure"] == {"reason": "NonFiniteLoss", "message": "loss is nan"}
    with pytest.raises(TypeError):
        reporter.update(tokensPerSecond=1)  # field names, not wire names: a typo fails loudly


def test_alerts_keep_the_last_20_and_are_written_at_once(tmp_path):
    reporter = Reporter("run", 100, [FileSink(str(tmp_path / "p.json"))], min_interval=3600)
    reporter.update(step=1)
    for step in range(25):
        reporter.alert(Alert("LossSpike", "warning", f"spike {step}", step, "2026-01-01T00:00:00Z"))
    alerts = read(tmp_path / "p.json")["alerts"]
    assert [a["step"] for a in alerts] == list(range(5, 25))
    assert alerts[-1] == {
        "type": "LossSpike",
        "severity": "warning",
        "message": "spike 24",
        "step": 24,
        "time": "2026-01-01T00:00:00Z",
    }


def test_throughput_leaves_the_pauses_out_and_gives_mfu():
    clock = Clock()
    throughput = Throughput(flops_per_token=1000.0, peak=1e6, processes=2, clock=clock)
    throughput.add(500)
    clock.now += 1.0
    with throughput.paused():  # a checkpoint save
        clock.now += 30.0
    throughput.add(500)
    clock.now += 1.0
    tokens_per_second, mfu = throughput.read()
    assert tokens_per_second == pytest.approx(500.0) and mfu == pytest.approx(500.0 * 1000 / 2e6)
    clock.now += 2.0
    assert throughput.read() == (0.0, 0.0)  # a new window from the last reading
    assert Throughput(1000.0, None, 1, clock).read()[1] is None  # no peak, no MFU


def reporter_for(tmp_path, clock: Clock, rank: int = 0, log_every: int = 4) -> tuple[StepReporter, Recorded]:
    world = World(rank, rank, 2, torch.device("cpu"))
    sinks = [FileSink(str(tmp_path / "p.json"))] if rank == 0 else []
    metrics = Recorded()
    reporter = StepReporter(
        "tiny",
        world,
        total_steps=10,
        log_every=log_every,
        tokens_per_step=100,
        throughput=Throughput(1.0, None, 2, clock),
        progress=Reporter("tiny", 10, sinks, min_interval=0),
        metrics=metrics,  # type: ignore[arg-type]
        detector=AnomalyDetector(AlertsSpec()),
    )
    return reporter, metrics


def outcome(loss: float = 3.0) -> StepOutcome:
    return StepOutcome(loss=loss, grad_norm=0.5, lr=1e-3, seconds=2.0, alerts=[])


def test_logs_every_n_steps_and_at_the_last_validation_figures_when_measured(tmp_path):
    clock = Clock()
    reporter, metrics = reporter_for(tmp_path, clock)
    state = TrainState()
    for step in range(1, 11):
        clock.now += 1.0
        state.advance(3.0, 100)
        reporter.trained(outcome(), state, {"valLoss": 2.5, "perplexity": 12.2} if step == 6 else None)
        report = read(tmp_path / "p.json")
        if step == 5:
            assert report["tokensPerSecond"] == 100  # measured at step 4, kept until the next log
    assert [step for step, _ in metrics.logged] == [4, 6, 8, 10]
    assert set(metrics.logged[0][1]) == {"loss", "lr", "gradNorm", "tokensPerSecond", "mfu", "memoryMiB"}
    assert metrics.logged[1][1] == {"val/valLoss": 2.5, "val/perplexity": 12.2}
    assert metrics.logged[0][1]["tokensPerSecond"] == pytest.approx(100.0)
    assert (report["step"], report["tokensSeen"], report["loss"], report["valLoss"]) == (10, 1000, 3.0, 2.5)
    assert report["eta"] == "0m00s" and report["mfu"] is None


def test_the_eta_follows_the_moving_average_of_step_times(tmp_path):
    reporter, _ = reporter_for(tmp_path, Clock())
    state = TrainState()
    state.advance(3.0, 100)
    reporter.trained(outcome(), state, None)
    assert read(tmp_path / "p.json")["eta"] == "0m18s"  # 9 steps left at 2 s


def test_only_rank_0_speaks(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="llmtrain.audit")
    other, metrics = reporter_for(tmp_path, Clock(), rank=1, log_every=1)
    state = TrainState()
    state.advance(3.0, 100)
    other.trained(outcome(), state, {"valLoss": 2.5, "perplexity": 12.2})
    other.alert(Alert("LossSpike", "warning", "spike", 0))
    other.started(0, 1000)
    assert metrics.logged == [] and not (tmp_path / "p.json").exists()
    assert not [r for r in caplog.records if getattr(r, "event", None)]
    main, _ = reporter_for(tmp_path, Clock())
    main.alert(Alert("LossSpike", "warning", "spike", 0))
    assert [r.event for r in caplog.records if getattr(r, "event", None)] == ["Alert"]
    assert read(tmp_path / "p.json")["alerts"][0]["type"] == "LossSpike"


@pytest.mark.parametrize(("phase", "event"), [("Paused", "TrainingPaused"), ("Interrupted", "TrainingInterrupted")])
def test_a_halt_is_written_at_once_and_closes_the_metrics(tmp_path, caplog, phase, event):
    caplog.set_level(logging.INFO, logger="llmtrain.audit")
    reporter, metrics = reporter_for(tmp_path, Clock())
    reporter.halted(7, phase)
    assert read(tmp_path / "p.json")["phase"] == phase and metrics.closed
    assert [(r.event, r.step) for r in caplog.records if getattr(r, "event", None)] == [(event, 7)]


def test_the_end_reports_the_last_step_and_no_eta(tmp_path):
    reporter, metrics = reporter_for(tmp_path, Clock())
    state = TrainState(step=10, tokens_seen=1000, loss=2.0, val_loss=2.25)
    reporter.finished(state)
    report = read(tmp_path / "p.json")
    assert (report["phase"], report["step"], report["eta"]) == ("Succeeded", 10, None) and metrics.closed
    assert time.strptime(report["updatedAt"], "%Y-%m-%dT%H:%M:%SZ")

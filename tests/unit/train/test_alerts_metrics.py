"""Anomaly alerts and the metrics sinks."""

from __future__ import annotations

import json
import socket
import urllib.request

from llmtrain.api.trainingrun import AlertsSpec
from llmtrain.core.progress import Alert, format_eta
from llmtrain.train.anomalies import WARMUP_OBSERVATIONS, AnomalyDetector
from llmtrain.train.progress import FileSink, Metrics, Reporter


def test_loss_spike_after_warmup_and_nonfinite_at_once():
    detector = AnomalyDetector(AlertsSpec(loss_spike_factor=2.0))
    assert detector.check_loss(0, float("inf")).type == "NonFiniteLoss"
    for step in range(WARMUP_OBSERVATIONS):
        assert detector.check_loss(step, 3.0 - step * 0.01) is None
    spike = detector.check_loss(50, 9.0)
    assert spike.type == "LossSpike" and spike.severity == "warning" and "x its running mean" in spike.message
    assert detector.check_loss(51, 3.0) is None


def test_grad_norm_and_throughput_drop():
    detector = AnomalyDetector(AlertsSpec(grad_norm_max=5.0, throughput_drop_fraction=0.5))
    assert detector.check_grad_norm(1, 4.0) is None and detector.check_grad_norm(2, 6.0).type == "GradNormHigh"
    assert all(detector.check_throughput(s, 1000.0) is None for s in range(10))
    assert detector.check_throughput(11, 400.0).type == "ThroughputDrop"
    assert AnomalyDetector(AlertsSpec()).check_grad_norm(1, 1e9) is None  # no gradNormMax, no alert
    assert AnomalyDetector(AlertsSpec()).check_grad_norm(1, float("nan")).severity == "critical"  # diverged


def test_reporter_throttles_but_forces_events(tmp_path):
    sink = FileSink(str(tmp_path / "progress.json"))
    reporter = Reporter("run", 100, [sink], min_interval=3600)
    reporter.update(step=1)
    reporter.update(step=2)
    assert json.loads((tmp_path / "progress.json").read_text())["step"] == 1  # throttled
    reporter.alert(Alert("LossSpike", "warning", "loss 9.0 is 3.0x its running mean", 1))
    report = json.loads((tmp_path / "progress.json").read_text())
    spike = {"type": "LossSpike", "severity": "warning", "message": "loss 9.0 is 3.0x its running mean", "step": 1}
    assert report["step"] == 2 and report["alerts"] == [spike] and report["version"] == 1
    assert format_eta(3725) == "1h02m" and format_eta(65) == "1m05s" and format_eta(None) is None


def test_jsonl_tensorboard_and_prometheus(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = Metrics(tmp_path, "tiny", port)
    sources = [
        {"name": "web-crawl", "weight": 0.75, "tokensSeen": 4096, "epochs": 0.5, "valLoss": 2.5},
        {"name": "code", "weight": 0.25, "tokensSeen": 1024, "epochs": 1.25},
    ]
    metrics.log(10, {"loss": 3.5, "tokensPerSecond": 1234.0, "mfu": None}, sources)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'llmtrain_train_loss{run="tiny"} 3.5' in body and 'llmtrain_train_step{run="tiny"} 10.0' in body
    assert 'llmtrain_train_source_tokensSeen{run="tiny",source="web-crawl"} 4096.0' in body
    assert 'llmtrain_train_source_epochs{run="tiny",source="code"} 1.25' in body
    metrics.close()
    line = json.loads((tmp_path / "metrics.jsonl").read_text())  # one line for the step, sources inside
    assert line["loss"] == 3.5 and line["sources"] == {
        "web-crawl": {"tokensSeen": 4096, "epochs": 0.5, "valLoss": 2.5},
        "code": {"tokensSeen": 1024, "epochs": 1.25},
    }
    assert list((tmp_path / "tensorboard").iterdir())


def test_human_progress_line_only_when_asked(monkeypatch, capsys):
    from llmtrain import logs

    monkeypatch.delenv("LLMTRAIN_HUMAN_LOGS", raising=False)
    logs.human("step 1/2 loss 3.0")
    assert capsys.readouterr().err == ""  # not a terminal, not asked
    monkeypatch.setenv("LLMTRAIN_HUMAN_LOGS", "1")
    logs.human("step 1/2 loss 3.0")
    assert capsys.readouterr().err.endswith(" step 1/2 loss 3.0\n")

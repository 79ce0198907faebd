"""The progress report (version 1): one type for the trainer that writes it and the core that reads it.
What a pod wrote is not trusted: wrong types are dropped, strings clipped, other versions ignored."""

from __future__ import annotations

import json

import pytest

from llmtrain.core.progress import (
    STATUS_FIGURES,
    Alert,
    CheckpointRef,
    ProgressReport,
    camel,
)


def full_report() -> ProgressReport:
    return ProgressReport(
        run="tiny",
        total_steps=300,
        step=120,
        tokens_seen=61440,
        loss=3.25,
        val_loss=3.5,
        perplexity=33.1,
        tokens_per_second=5700.4,
        mfu=0.12,
        eta="3m20s",
        latest_checkpoint=CheckpointRef(100, "s3://b/run/step-100", "2026-11-26T11:50:00Z", 3.6),
        best_checkpoint=CheckpointRef(100, "s3://b/run/step-100"),
        alerts=[Alert("LossSpike", "warning", "loss 9 > 3x mean", 110, "2026-11-26T11:49:00Z")],
        started_at="2026-11-26T11:00:00Z",
        updated_at="2026-11-26T11:51:00Z",
        sources=[
            {"name": "web", "weight": 0.75, "tokensSeen": 46080, "epochs": 0.5, "valLoss": 3.4},
            {"name": "code", "weight": 0.25, "tokensSeen": 15360, "epochs": 1.5},
        ],
        initialized_from="s3://b/base/checkpoints/step-00001000",
    )


def test_the_wire_format_round_trips_through_json():
    report = full_report()
    wire = json.loads(json.dumps(report.to_json()))
    assert wire["version"] == 1 and wire["tokensPerSecond"] == 5700.4 and wire["latestCheckpoint"]["valLoss"] == 3.6
    assert wire["sources"][1] == {"name": "code", "weight": 0.25, "tokensSeen": 15360, "epochs": 1.5}
    assert wire["initializedFrom"] == "s3://b/base/checkpoints/step-00001000"
    assert "failure" not in wire  # only a failed trainer reports one
    assert ProgressReport.from_json(wire) == report


def test_the_status_copies_the_figures_under_the_same_names():
    figures = full_report().status_figures()
    assert figures["tokensPerSecond"] == 5700 and isinstance(figures["tokensPerSecond"], int)
    assert set(figures) | {"step", "progress", "lastProgressTime"} == STATUS_FIGURES
    assert ProgressReport("r", 1).status_figures() == {"tokensSeen": 0}  # unset figures are left out
    assert camel("tokens_per_second") == "tokensPerSecond" and camel("mfu") == "mfu"


@pytest.mark.parametrize("document", [None, [], "x", {"step": 5}, {"version": 2, "step": 5}, {"version": "1"}])
def test_anything_but_a_version_one_report_is_no_report(document):
    assert ProgressReport.from_json(document) is None


def test_a_hostile_report_loses_its_bad_fields_not_the_good_ones():
    wire = {
        "version": 1,
        "step": "120",  # a string is not a step
        "loss": float("nan"),
        "mfu": True,  # a bool is not a number
        "tokensPerSecond": 900,
        "eta": "x" * 1000,
        "latestCheckpoint": {"step": 5},  # no uri
        "bestCheckpoint": {"step": 7, "uri": "pvc://c/step-7", "valLoss": "low"},
        "alerts": [
            "not an alert",
            {"message": "no type"},
            {"type": "T" * 100, "severity": "fatal", "message": "m" * 5000, "step": "x"},
        ],
    }
    report = ProgressReport.from_json(wire)
    assert report is not None
    assert (report.step, report.loss, report.mfu, report.tokens_per_second) == (0, None, None, 900.0)
    assert len(report.eta) == 64 and report.latest_checkpoint is None
    assert report.best_checkpoint == CheckpointRef(7, "pvc://c/step-7")
    [alert] = report.alerts
    assert (len(alert.type), alert.severity, len(alert.message), alert.step) == (64, "warning", 4096, None)


def test_alerts_keep_the_newest_twenty():
    report = ProgressReport("r", 10)
    for step in range(25):
        report.add_alert(Alert("LossSpike", "warning", "", step))
    assert [a.step for a in report.alerts] == list(range(5, 25))


def test_hostile_sources_lose_their_bad_items_and_fields():
    wire = {
        "version": 1,
        "sources": [
            "not a source",
            {"weight": 0.5},  # no name
            {"name": "no-weight"},
            {"name": "bad-weight", "weight": "half"},
            {"name": "n" * 300, "weight": 1, "tokensSeen": "many", "epochs": float("inf"), "valLoss": True},
            *({"name": f"s{i}", "weight": 0.01} for i in range(30)),
        ],
        "initializedFrom": "u" * 5000,
    }
    report = ProgressReport.from_json(wire)
    assert report is not None and len(report.sources) == 16  # a mixture names at most 16 DataSources
    assert report.sources[0] == {"name": "n" * 253, "weight": 1.0}  # wrong types dropped, the name clipped
    assert [s["name"] for s in report.sources[1:]] == [f"s{i}" for i in range(15)]
    assert len(report.initialized_from) == 4096
    for not_a_list in ({"name": "x", "weight": 1}, "x", 5):
        assert ProgressReport.from_json({"version": 1, "sources": not_a_list}).sources == []
    assert ProgressReport.from_json({"version": 1, "initializedFrom": 7}).initialized_from is None


def test_sources_are_a_figure_and_initialized_from_is_not():
    report = full_report()
    figures = report.status_figures()
    assert figures["sources"] == report.sources and figures["sources"] is not report.sources
    assert "initializedFrom" not in figures and "initializedFrom" not in STATUS_FIGURES

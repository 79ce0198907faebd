"""Alert rules and the dashboard: valid PromQL (the Prometheus grammar, via promql-parser) that reads only
metrics the operator exports; rendered by the real helm binary."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from llmtrain_operator.metrics import Metrics
from support.paths import ROOT

HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "llmtrain"
promql = pytest.importorskip("promql_parser")


def exported() -> set[str]:
    """Every sample name the operator's registry can produce (counters as _total, histograms' series)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(
            {
                f"{family.name}_total",
                f"{family.name}_bucket",
                f"{family.name}_sum",
                f"{family.name}_count",
                f"{family.name}_created",
            }
        )
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bllmtrain_[a-z_]+\b", expr))


def check(expr: str) -> None:
    promql.parse(expr.replace("$namespace", "x").replace("$run", "x"))  # raises on a syntax error
    unknown = metric_names(expr) - exported()
    assert not unknown, f"{expr!r} reads metrics the operator does not export: {unknown}"
    assert metric_names(expr), f"{expr!r} reads no llmtrain metric"


@pytest.mark.skipif(not HELM.exists(), reason="helm is not installed: run `make tools`")
def test_alert_rules_parse_and_use_exported_metrics():
    text = subprocess.run(
        [str(HELM), "template", "t", str(CHART), "--set", "metrics.prometheusRule.enabled=true"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rule = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "LLMTrainRunFailed",
        "LLMTrainRunStalled",
        "LLMTrainLossNotFinite",
        "LLMTrainLossSpike",
        "LLMTrainThroughputDrop",
        "LLMTrainOperatorReconcileErrors",
    }
    for alert in alerts.values():
        check(alert["expr"])
        assert alert["labels"]["severity"] in ("warning", "critical") and alert["annotations"]["summary"]
    assert "> 1800" in alerts["LLMTrainRunStalled"]["expr"]  # stallMinutes: 30


def test_dashboard_queries_use_exported_metrics():
    dashboard = json.loads((CHART / "dashboards" / "llmtrain.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "TrainingRuns by phase",
        "Training loss",
        "Validation loss",
        "Tokens per second",
        "MFU",
        "Checkpoint age",
        "Restarts",
    } <= titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            check(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert metric_names(variable["query"]) <= exported()


def test_a_broken_query_is_caught():
    with pytest.raises(ValueError):
        check("sum by (phase (llmtrain_resources")
    with pytest.raises(AssertionError):
        check("llmtrain_made_up_metric > 0")

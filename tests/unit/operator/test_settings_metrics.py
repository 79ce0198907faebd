"""Operator configuration errors name the variable; metrics carry what the dashboards read."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from llmtrain_operator.metrics import Metrics
from llmtrain_operator.settings import ConfigurationError, from_env


def test_settings_from_the_environment():
    settings = from_env(
        {
            "LLMTRAIN_NAMESPACES": "a, b",
            "LLMTRAIN_STORAGE_ROOT": "s3://models/llm/",
            "LLMTRAIN_STORAGE_SECRET": "s3",
            "LLMTRAIN_STATUS_INTERVAL": "5",
        }
    )
    assert settings.namespaces == ("a", "b") and settings.storage_root == "s3://models/llm"
    assert settings.context().storage_secret == "s3" and settings.status_interval == 5.0
    assert from_env({}).namespaces == ()  # cluster scope


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"LLMTRAIN_STORAGE_ROOT": "/data"}, "LLMTRAIN_STORAGE_ROOT"),
        ({"LLMTRAIN_STORAGE_ROOT": "s3://b/p"}, "LLMTRAIN_STORAGE_SECRET"),
        ({"LLMTRAIN_RESYNC_SECONDS": "soon"}, "LLMTRAIN_RESYNC_SECONDS='soon' is not a number"),
        ({"LLMTRAIN_RESYNC_SECONDS": "0"}, "at least"),
    ],
)
def test_bad_settings_are_refused_with_the_variable(env, words):
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(")):
        from_env(env)


def test_metrics_follow_the_status():
    metrics = Metrics()
    body = {"kind": "TrainingRun", "metadata": {"namespace": "ns", "name": "r"}}
    metrics.observe(
        body,
        {
            "phase": "Running",
            "step": 12,
            "totalSteps": 30,
            "loss": 5.5,
            "tokensPerSecond": 900,
            "mfu": 0.4,
            "restarts": 1,
            "alerts": [{"type": "LossSpike"}],
            "latestCheckpoint": {"step": 10, "uri": "x", "time": "2026-11-26T00:00:00Z"},
        },
    )
    text = generate_latest(metrics.registry).decode()
    assert 'llmtrain_run_step{namespace="ns",run="r"} 12.0' in text
    assert 'llmtrain_resources{kind="TrainingRun",phase="Running"} 1.0' in text
    assert 'llmtrain_run_alerts{namespace="ns",run="r",type="LossSpike"} 1.0' in text
    assert "llmtrain_run_checkpoint_timestamp_seconds" in text
    metrics.observe(body, {"phase": "Succeeded"})
    text = generate_latest(metrics.registry).decode()
    assert 'llmtrain_resources{kind="TrainingRun",phase="Running"} 0.0' in text
    assert 'llmtrain_resources{kind="TrainingRun",phase="Succeeded"} 1.0' in text
    metrics.forget("TrainingRun", "ns", "r")
    assert 'llmtrain_resources{kind="TrainingRun",phase="Succeeded"} 0.0' in generate_latest(metrics.registry).decode()
    assert 'llmtrain_run_step{namespace="ns",run="r"}' not in generate_latest(metrics.registry).decode()


def test_the_operator_refuses_bad_configuration_at_start_up():
    import os
    import subprocess
    import sys

    env = {**os.environ, "LLMTRAIN_STORAGE_ROOT": "s3://models/llm"}
    env.pop("LLMTRAIN_STORAGE_SECRET", None)
    result = subprocess.run(
        [sys.executable, "-m", "llmtrain_operator"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "LLMTRAIN_STORAGE_SECRET is unset" in result.stderr

"""The status throttle: a progress-only write held back is not lost (the plan says when to look again,
and that reconcile writes the last report), and a resource never written is not throttled at all, however
recently the machine started (monotonic time near zero is not "written at time zero")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmtrain.control.reconciler import Reconciler
from llmtrain.core import Context, naming
from support.resources import EXAMPLES, world_with_a_run


def throttled_world(tmp_path, monkeypatch, start: float):
    clock = [start]
    monkeypatch.setattr("llmtrain.control.reconciler.time.monotonic", lambda: clock[0])
    store, run = world_with_a_run(tmp_path)
    key = ("TrainingRun", run["metadata"]["namespace"], run["metadata"]["name"])
    reconciler = Reconciler(store, Context(local=True, base_dir=str(EXAMPLES), status_interval=10.0))
    sink = Path(store.progress_sink(key[1], naming.progress_configmap(key[2])))
    sink.parent.mkdir(parents=True, exist_ok=True)

    def report(step: int) -> None:
        sink.write_text(json.dumps({"version": 1, "phase": "Running", "step": step, "totalSteps": 300}))

    return clock, store, key, reconciler, report


def test_a_throttled_progress_write_is_made_when_the_throttle_allows(tmp_path, monkeypatch):
    clock, store, key, reconciler, report = throttled_world(tmp_path, monkeypatch, 1000.0)
    reconciler.reconcile(*key)  # creates the children and writes the first status
    report(5)
    reconciler.reconcile(*key)
    assert store.get(*key)["status"]["step"] == 5  # the first report changes more than figures: written
    clock[0] += 1
    report(6)
    plan = reconciler.reconcile(*key)  # within 10 s of the last write: held back
    assert store.get(*key)["status"]["step"] == 5
    assert plan.requeue_after == pytest.approx(9.0)  # look again when the throttle allows
    clock[0] += 9.5
    plan = reconciler.reconcile(*key)
    assert store.get(*key)["status"]["step"] == 6
    assert plan.requeue_after is None  # nothing held back any more


@pytest.mark.parametrize("uptime", [0.0, 3.0])
def test_an_operator_on_a_machine_up_for_seconds_writes_at_once(tmp_path, monkeypatch, uptime):
    """A restarted operator (a new Reconciler) on a machine booted `uptime` seconds ago: its first
    progress-only write is made at once."""
    _clock, store, key, reconciler, report = throttled_world(tmp_path, monkeypatch, uptime)
    report(5)
    reconciler.reconcile(*key)
    report(6)
    restarted = Reconciler(store, reconciler.ctx)
    plan = restarted.reconcile(*key)
    assert store.get(*key)["status"]["step"] == 6
    assert plan.requeue_after is None  # nothing held back

"""A progress-only status write held back by the throttle is not lost: `Reconciler.due()` hands the
resource back once the throttle allows, and that reconcile writes the last report."""

from __future__ import annotations

import json
from pathlib import Path

from llmtrain.control.reconciler import Reconciler
from llmtrain.core import Context, naming
from support.resources import EXAMPLES, world_with_a_run


def test_a_throttled_progress_write_is_made_when_the_throttle_allows(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("llmtrain.control.reconciler.time.monotonic", lambda: clock[0])
    store, run = world_with_a_run(tmp_path)
    key = ("TrainingRun", run["metadata"]["namespace"], run["metadata"]["name"])
    reconciler = Reconciler(store, Context(local=True, base_dir=str(EXAMPLES), status_interval=10.0))
    sink = Path(store.progress_sink(key[1], naming.progress_configmap(key[2])))
    sink.parent.mkdir(parents=True, exist_ok=True)

    def report(step: int) -> None:
        sink.write_text(json.dumps({"version": 1, "phase": "Running", "step": step, "totalSteps": 300}))

    reconciler.reconcile(*key)  # creates the children and writes the first status
    report(5)
    reconciler.reconcile(*key)
    assert store.get(*key)["status"]["step"] == 5  # the first report changes more than figures: written
    clock[0] += 1
    report(6)
    reconciler.reconcile(*key)  # within 10 s of the last write: held back
    assert store.get(*key)["status"]["step"] == 5 and reconciler.due() == []
    clock[0] += 9.5
    assert reconciler.due() == [key]  # the throttle allows it now
    assert reconciler.due() == []  # handed out once
    reconciler.reconcile(*key)
    assert store.get(*key)["status"]["step"] == 6

"""Every reason to look at a resource goes through the operator's one work queue: a failed pass comes back
after a growing delay, the plan's `requeue_after` brings it back without an event, a transition enqueues the
resources waiting on it, and the resync enqueues everything; only the workers reconcile."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from llmtrain_operator.operator import Operator
from llmtrain_operator.settings import Settings

RUN = ("TrainingRun", "team-a", "tiny")


@dataclass
class FakePlan:
    events: list[Any] = field(default_factory=list)
    requeue_after: float | None = None


class FakeReconciler:
    """Plays the given outcomes (a plan, None, or an exception to raise) in turn; records when each ran."""

    def __init__(self, outcomes: list[Any]) -> None:
        self.outcomes, self.calls = list(outcomes), []

    def reconcile(self, kind: str, namespace: str, name: str) -> Any:
        self.calls.append(((kind, namespace, name), time.monotonic()))
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def resource(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"}, "spec": spec}


class FakeApi:
    """The API server's LISTs, as the watch cache reads them."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def list_with_version(self, kind: str, namespace: str | None, labels: dict[str, str] | None) -> Any:
        return [body for body in self.objects if body["kind"] == kind], 1


@pytest.fixture
def world() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def operator(world):
    settings = Settings(api_url="http://127.0.0.1:1", metrics_port=None, workers=1)
    operator = Operator(settings, store=FakeApi(world))
    yield operator
    operator._stop.set()
    operator.queue.close()


def work(operator: Operator, outcomes: list[Any], until: int) -> FakeReconciler:
    """Run one worker until `until` reconciles have happened (or 10 s)."""
    operator.reconciler = fake = FakeReconciler(outcomes)
    worker = threading.Thread(target=operator._work, daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while len(fake.calls) < until and time.monotonic() < deadline:
        time.sleep(0.01)
    operator._stop.set()
    worker.join(5)
    return fake


def test_a_failed_pass_is_retried_after_a_growing_delay(operator):
    operator.store.relist()
    operator.queue.add(RUN)
    fake = work(operator, [RuntimeError("500"), RuntimeError("500"), FakePlan()], until=3)
    times = [at for _, at in fake.calls]
    assert [key for key, _ in fake.calls] == [RUN] * 3
    assert times[1] - times[0] >= 0.45 and times[2] - times[1] >= 0.95  # 0.5 s, then 1 s
    assert operator._failures == {}  # a successful pass starts the delays over


def test_the_backoff_doubles_up_to_30_seconds(operator):
    assert [operator._backoff(RUN) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_the_plan_brings_the_resource_back_after_requeue_after(operator):
    operator.store.relist()
    operator.queue.add(RUN)
    fake = work(operator, [FakePlan(requeue_after=0.1), FakePlan()], until=2)
    assert [key for key, _ in fake.calls] == [RUN, RUN]
    assert fake.calls[1][1] - fake.calls[0][1] >= 0.09
    assert operator.queue.get(timeout=0.3) is None  # no requeue_after the second time: not back


def test_a_transition_enqueues_the_dependents_instead_of_reconciling_them(operator, world):
    world += [
        resource("DataSource", "corpus"),
        resource("TrainingRun", "tiny", dataSourceRef={"name": "corpus"}),
        resource("TrainingRun", "other", dataSourceRef={"name": "elsewhere"}),
        resource("ModelExport", "tiny-export", dataSourceRef={"name": "corpus"}),
        resource("DataSource", "sharing", tokenizer={"fromDataSourceRef": {"name": "corpus"}}),
    ]
    operator.store.relist()
    operator.reconciler = fake = FakeReconciler([FakePlan(events=["Ingested"])])
    operator.reconcile("DataSource", "team-a", "corpus")
    assert [key for key, _ in fake.calls] == [("DataSource", "team-a", "corpus")]  # only the one asked for
    assert {operator.queue.get(0) for _ in range(4)} == {
        ("TrainingRun", "team-a", "tiny"),
        ("ModelExport", "team-a", "tiny-export"),
        ("DataSource", "team-a", "sharing"),  # its tokenizer is corpus's
        None,
    }


def test_resync_enqueues_every_resource_without_reconciling(operator, world):
    world += [resource("DataSource", "corpus"), resource("TrainingRun", "tiny"), resource("ModelExport", "x")]
    operator.store.relist()
    operator.reconciler = fake = FakeReconciler([])
    operator.resync()
    assert fake.calls == [] and len(operator.queue) == 3
    assert {operator.queue.get(0) for _ in range(3)} == {
        ("DataSource", "team-a", "corpus"),
        ("TrainingRun", "team-a", "tiny"),
        ("ModelExport", "team-a", "x"),
    }

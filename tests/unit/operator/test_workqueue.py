"""The operator's de-duplicating work queue: a key waits once; a key added while it is processed comes
back once after `done`; `close` releases the workers. Delayed adds (`add_after`) become ready at their
time, the earliest due time of a key wins, and a waiting `get` wakes for it without another add."""

from __future__ import annotations

import threading
import time

from llmtrain_operator.workqueue import WorkQueue

DELAY = 0.05  # seconds: short, yet long enough that "not yet" is not a race


def test_a_waiting_key_is_queued_once_in_order():
    queue = WorkQueue()
    for key in ["a", "b", "a", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert [queue.get(0), queue.get(0), queue.get(0), queue.get(0)] == ["a", "b", "c", None]


def test_a_key_added_while_busy_comes_back_once_after_done():
    queue = WorkQueue()
    queue.add("run")
    assert queue.get(0) == "run"
    queue.add("run")  # an event during the reconcile: it may have read the world before the event
    queue.add("run")
    assert queue.get(0) is None  # not handed to a second worker while the first is busy
    queue.done("run")
    assert queue.get(0) == "run" and queue.get(0) is None
    queue.done("run")
    assert len(queue) == 0


def test_close_wakes_a_waiting_worker():
    queue = WorkQueue()
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=30)))
    worker.start()
    queue.close()
    worker.join(5)
    assert not worker.is_alive() and got == [None]


def test_a_delayed_key_is_ready_only_at_its_time():
    queue = WorkQueue()
    queue.add_after("run", DELAY)
    assert queue.get(0) is None and len(queue) == 0
    started = time.monotonic()
    assert queue.get(timeout=5) == "run"
    assert time.monotonic() - started >= DELAY * 0.5


def test_delayed_keys_come_out_in_due_order_after_ready_ones():
    queue = WorkQueue()
    queue.add_after("late", 3 * DELAY)
    queue.add_after("early", DELAY)
    queue.add_after("now", 0)  # not positive: added at once
    queue.add("event")
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["now", "event", None]
    assert [queue.get(timeout=5), queue.get(timeout=5)] == ["early", "late"]


def test_the_earliest_due_time_of_a_key_wins():
    queue = WorkQueue()
    queue.add_after("run", 60)
    queue.add_after("run", DELAY)  # earlier: replaces the first
    queue.add_after("run", 60)  # later: ignored
    assert queue.get(timeout=5) == "run"
    queue.done("run")
    assert queue.get(timeout=3 * DELAY) is None  # handed out once, not again for the superseded times


def test_a_due_key_is_deduplicated_with_a_waiting_key():
    queue = WorkQueue()
    queue.add("run")
    queue.add_after("run", DELAY)
    time.sleep(2 * DELAY)
    assert len(queue) == 1  # came due while waiting: still one entry
    assert queue.get(0) == "run" and queue.get(0) is None


def test_a_key_that_comes_due_while_busy_comes_back_once_after_done():
    queue = WorkQueue()
    queue.add("run")
    assert queue.get(0) == "run"
    queue.add_after("run", DELAY)
    queue.add("run")
    time.sleep(2 * DELAY)
    assert queue.get(0) is None  # not handed to a second worker while the first is busy
    queue.done("run")
    assert queue.get(0) == "run" and queue.get(0) is None


def test_a_waiting_get_wakes_for_a_key_delayed_after_it_began_waiting():
    queue = WorkQueue()
    got = []
    worker = threading.Thread(target=lambda: got.append((queue.get(timeout=30), time.monotonic())))
    worker.start()
    time.sleep(DELAY)  # the worker waits with no due time yet
    added = time.monotonic()
    queue.add_after("run", DELAY)
    worker.join(5)
    assert not worker.is_alive() and got[0][0] == "run"
    assert DELAY * 0.5 <= got[0][1] - added < 5  # woke at the due time, long before its own timeout


def test_a_worker_that_gives_up_first_leaves_the_delayed_key_to_another():
    queue = WorkQueue()
    got: dict[str, object] = {}
    hasty = threading.Thread(target=lambda: got.update(hasty=queue.get(timeout=DELAY)))
    patient = threading.Thread(target=lambda: got.update(patient=(queue.get(timeout=30), time.monotonic())))
    for worker in (hasty, patient):
        worker.start()
    time.sleep(DELAY / 5)
    added = time.monotonic()
    queue.add_after("run", 3 * DELAY)
    for worker in (hasty, patient):
        worker.join(5)
    assert got["hasty"] is None
    key, at = got["patient"]
    assert key == "run" and at - added < 2  # woke at the due time, not at its own 30 s timeout


def test_several_waiting_workers_share_keys_that_come_due_together():
    queue = WorkQueue()
    got: list[str] = []
    workers = [threading.Thread(target=lambda: got.append(queue.get(timeout=5))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for key in ["a", "b", "c"]:
        queue.add_after(key, DELAY)
    for worker in workers:
        worker.join(10)
    assert sorted(got) == ["a", "b", "c"]


def test_close_wakes_a_worker_waiting_for_a_delayed_key():
    queue = WorkQueue()
    queue.add_after("run", 60)
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get(timeout=30)))
    worker.start()
    time.sleep(DELAY)
    queue.close()
    worker.join(5)
    assert not worker.is_alive() and got == [None]
    assert queue.get(0) is None  # closed: nothing handed out, delayed or not


def test_superseded_due_times_do_not_pile_up():
    queue = WorkQueue()
    for seconds in range(100, 0, -1):  # each one earlier than the last
        queue.add_after("run", seconds)
    assert len(queue._heap) <= 2 * len(queue._delayed) + 1  # compacted, not 100 entries

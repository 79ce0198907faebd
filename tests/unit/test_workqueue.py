"""The operator's de-duplicating work queue: a key waits once; a key added while it is processed comes
back once after `done`; `close` releases the workers."""

from __future__ import annotations

import threading

from llmtrain.control.workqueue import WorkQueue


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

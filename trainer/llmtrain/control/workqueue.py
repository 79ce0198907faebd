"""A de-duplicating work queue of resource keys (controller-runtime's pattern).

Events only name a resource to look at; the reconcile reads the world itself. So a key already waiting
needs no second entry, and a key being processed is queued once more at most (its reconcile may have
read the world before the event). The watch threads never wait for a reconcile: memory stays bounded by
the number of resources, not the number of events, however fast trainers report.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable


class WorkQueue:
    def __init__(self) -> None:
        self._order: deque[Hashable] = deque()
        self._waiting: set[Hashable] = set()
        self._busy: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._changed = threading.Condition()
        self._closed = False

    def add(self, key: Hashable) -> None:
        with self._changed:
            if key in self._busy:
                self._again.add(key)  # handed out again when done()
            elif key not in self._waiting:
                self._waiting.add(key)
                self._order.append(key)
                self._changed.notify()

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key (now marked busy), or None when closed or after `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._order or self._closed, timeout):
                return None
            if self._closed:
                return None
            key = self._order.popleft()
            self._waiting.discard(key)
            self._busy.add(key)
            return key

    def done(self, key: Hashable) -> None:
        with self._changed:
            self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._waiting.add(key)
                self._order.append(key)
                self._changed.notify()

    def __len__(self) -> int:
        with self._changed:
            return len(self._order)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

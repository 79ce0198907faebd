"""A de-duplicating work queue of resource keys with delayed adds (controller-runtime's workqueue).

Events only name a resource to look at; the reconcile reads the world itself. So a key already waiting
needs no second entry, and a key being processed is queued once more at most (its reconcile may have
read the world before the event). The watch threads never wait for a reconcile: memory stays bounded by
the number of resources, not the number of events, however fast trainers report.

`add_after` is controller-runtime's AddAfter: the key joins a heap of (due, key) and, at its time, is
added as by `add`. A key has one due time at most, the earliest asked for. There is no timer thread:
`get` waits on the condition until the earliest due time, so whichever worker waits picks it up.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable

#: (due on the monotonic clock, a sequence number so keys are never compared, key)
_Delayed = tuple[float, int, Hashable]


class WorkQueue:
    def __init__(self) -> None:
        self._order: deque[Hashable] = deque()
        self._waiting: set[Hashable] = set()
        self._busy: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._heap: list[_Delayed] = []
        self._delayed: dict[Hashable, _Delayed] = {}  # each delayed key's live heap entry
        self._superseded = 0  # heap entries replaced by an earlier due time, dropped when they surface
        self._sequence = itertools.count()
        self._changed = threading.Condition()
        self._closed = False

    def add(self, key: Hashable) -> None:
        with self._changed:
            self._add(key)

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Add `key` once `seconds` have passed (now if not positive); the earliest due time wins."""
        if seconds <= 0:
            self.add(key)
            return
        with self._changed:
            due = time.monotonic() + seconds
            current = self._delayed.get(key)
            if current is not None and current[0] <= due:
                return
            if current is not None:
                self._superseded += 1
            entry = (due, next(self._sequence), key)
            self._delayed[key] = entry
            heapq.heappush(self._heap, entry)
            if self._superseded > len(self._delayed):
                self._compact()
            if self._heap[0] is entry:
                self._changed.notify_all()  # every waiting worker's timeout may now be too long

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key (now marked busy), or None when closed or after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                self._promote()
                if self._closed:
                    return None
                if self._order:
                    key = self._order.popleft()
                    self._waiting.discard(key)
                    self._busy.add(key)
                    return key
                now = time.monotonic()
                if deadline is not None and deadline <= now:
                    return None
                self._changed.wait(self._wait(now, deadline))

    def done(self, key: Hashable) -> None:
        with self._changed:
            self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._waiting.add(key)
                self._order.append(key)
                self._changed.notify()

    def __len__(self) -> int:
        """Keys ready to be handed out (not those still delayed)."""
        with self._changed:
            self._promote()
            return len(self._order)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    # -- under the lock ------------------------------------------------------------------------------

    def _add(self, key: Hashable) -> None:
        if key in self._busy:
            self._again.add(key)  # handed out again when done()
        elif key not in self._waiting:
            self._waiting.add(key)
            self._order.append(key)
            self._changed.notify()

    def _promote(self) -> None:
        """Add every delayed key whose time has come."""
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            key = entry[2]
            if self._delayed.get(key) is not entry:
                self._superseded -= 1
                continue
            del self._delayed[key]
            self._add(key)

    def _wait(self, now: float, deadline: float | None) -> float | None:
        """Seconds until the next due key or the deadline, whichever is first (None: no limit)."""
        limits = [deadline] if deadline is not None else []
        if self._heap:
            limits.append(self._heap[0][0])
        return max(0.0, min(limits) - now) if limits else None

    def _compact(self) -> None:
        """Rebuild the heap from the live entries once superseded ones outnumber them."""
        self._heap = list(self._delayed.values())
        heapq.heapify(self._heap)
        self._superseded = 0

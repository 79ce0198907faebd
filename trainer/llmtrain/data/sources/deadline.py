"""An overall time limit for reading one network input (an HTTP URL, an S3 object, a SQL query).

A socket timeout bounds one wait; a server that drips a byte every few seconds never trips it. The
deadline bounds the whole read, retries included: when it passes, every socket it watches is shut down,
which ends any read blocked on it, and `check` raises a retryable SourceError naming the input.
`WaitDeadline` is the same limit for a SQL query, counted while waiting on the database.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

from . import SourceError

DEADLINE_ENV = "LLMTRAIN_READ_DEADLINE_SECONDS"
DEFAULT_SECONDS = 3600.0


def seconds_from_env() -> float:
    raw = os.environ.get(DEADLINE_ENV, "")
    if not raw:
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise SourceError(f"{DEADLINE_ENV}={raw!r}: must be a positive number of seconds")
    return seconds


class Deadline:
    """`seconds` from now (default: $LLMTRAIN_READ_DEADLINE_SECONDS or an hour) for reading `what`."""

    def __init__(self, what: str, seconds: float | None = None) -> None:
        self.what = what
        self.seconds = seconds_from_env() if seconds is None else seconds
        self._end = time.monotonic() + self.seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it has)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def check(self) -> None:
        """Raise the retryable deadline error once the deadline has passed."""
        if self.expired or self.remaining() <= 0:
            raise SourceError(
                f"{self.what}: not read completely within the deadline of {self.seconds:g} s"
                f" ({DEADLINE_ENV}); the server is too slow or stalled",
                retryable=True,
            )

    def close(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_RDWR)


class WaitDeadline:
    """`seconds` (default: $LLMTRAIN_READ_DEADLINE_SECONDS) of waiting on a database for `what`.

    Only the time spent inside `waiting()` counts, so a slow consumer of the rows never uses it up but a
    query that hangs or drips its rows does. When the time is used up during a wait, a watchdog thread
    calls `cancel` (which must end the blocked call, e.g. sqlite3's `interrupt`), and the wait raises the
    retryable deadline error whatever the call raised.
    """

    def __init__(self, what: str, cancel: Callable[[], object], seconds: float | None = None) -> None:
        self.what, self._cancel = what, cancel
        self.seconds = seconds_from_env() if seconds is None else seconds
        self._left = self.seconds
        self._since: float | None = None  # when the current wait began; None while not waiting
        self._closed = self.expired = False
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, daemon=True, name="read-deadline").start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A call that waits on the database: its time counts; raises the deadline error past it."""
        with self._changed:
            if self.expired or self._left <= 0:
                raise self._error()
            self._since = time.monotonic()
            self._changed.notify()
        try:
            yield
        except Exception:
            if self._stop():
                raise self._error() from None
            raise
        if self._stop():
            raise self._error()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _stop(self) -> bool:
        """End the current wait; whether the deadline passed."""
        with self._changed:
            if self._since is not None:
                self._left -= time.monotonic() - self._since
                self._since = None
            return self.expired or self._left <= 0

    def _watch(self) -> None:
        with self._changed:
            while not self._closed:
                left = None if self._since is None else self._left - (time.monotonic() - self._since)
                if left is not None and left <= 0:
                    self.expired = True
                    break
                self._changed.wait(left)
        if self.expired:
            with contextlib.suppress(Exception):
                self._cancel()

    def _error(self) -> SourceError:
        return SourceError(
            f"{self.what}: the rows did not arrive within the deadline of {self.seconds:g} s of waiting"
            f" ({DEADLINE_ENV}); the database is too slow or the query stalled",
            retryable=True,
        )

    def __enter__(self) -> WaitDeadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

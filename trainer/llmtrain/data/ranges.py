"""A byte range of a newline-delimited file, aligned to records.

A range `[start, end)` owns the records (lines) that *begin* inside it: a reader starting past 0 skips to
the first record boundary at or after `start`, and reads on through the record that crosses `end` (the
rule of Hadoop's TextInputFormat). Consecutive ranges therefore read every record exactly once.
"""

from __future__ import annotations

import io
from typing import IO

#: bytes read per call while skipping the record begun before a range
_SKIP_CHUNK = 1 << 20


class RecordRange(io.RawIOBase):
    """The records of `handle` (a seekable binary file) that begin in `[start, end)`, as one stream."""

    def __init__(self, handle: IO[bytes], start: int, end: int) -> None:
        self._handle, self._end = handle, end
        handle.seek(max(start - 1, 0))
        if start > 0:  # the byte before `start` ends a record, or the record it is in belongs to the range before
            while (skipped := handle.readline(_SKIP_CHUNK)) and not skipped.endswith(b"\n"):
                pass
        self._position = handle.tell()
        self._record_ended = True  # the stream stands at a record boundary
        self._finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._finished:
            return 0
        if self._position < self._end:
            data = self._handle.read(min(len(buffer), self._end - self._position))
        elif self._record_ended:
            data = b""
        else:  # the tail of the record that crosses `end`
            data = self._handle.readline(len(buffer))
        if not data:
            self._finished = True
            return 0
        self._position += len(data)
        self._record_ended = data.endswith(b"\n")
        buffer[: len(data)] = data
        return len(data)


def record_range(handle: IO[bytes], start: int, end: int) -> io.BufferedReader:
    """`RecordRange` buffered, so that lines can be read from it."""
    return io.BufferedReader(RecordRange(handle, start, end), 1 << 16)

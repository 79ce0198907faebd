"""A byte range of a newline-delimited file, aligned to records.

A range `[start, end)` owns the records (lines) that *begin* inside it: a reader starting past 0 skips to
the first record boundary at or after `start`, and reads on through the record that crosses `end` (the
rule of Hadoop's TextInputFormat). Consecutive ranges therefore read every record exactly once. The
stream is either a seekable file or one that already starts at `range_origin(start)` (an S3 object
fetched from there with a ranged GET).
"""

from __future__ import annotations

import io
from typing import IO

#: bytes read per call while skipping the record begun before a range
_SKIP_CHUNK = 1 << 20


def range_origin(start: int) -> int:
    """Where a range's reader starts: the byte before `start`, which says whether a record begins there."""
    return max(start - 1, 0)


class RecordRange(io.RawIOBase):
    """The records of `handle` that begin in `[start, end)`, as one stream. `handle` is a seekable binary
    file, or (`positioned`) a stream with `readline` already at `range_origin(start)`."""

    def __init__(self, handle: IO[bytes], start: int, end: int, positioned: bool = False) -> None:
        self._handle, self._end = handle, end
        self._position = range_origin(start)
        if not positioned:
            handle.seek(self._position)
        if start > 0:  # the byte before `start` ends a record, or the record it is in belongs to the range before
            while skipped := handle.readline(_SKIP_CHUNK):
                self._position += len(skipped)
                if skipped.endswith(b"\n"):
                    break
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


def record_range(handle: IO[bytes], start: int, end: int, positioned: bool = False) -> io.BufferedReader:
    """`RecordRange` buffered, so that lines can be read from it."""
    return io.BufferedReader(RecordRange(handle, start, end, positioned), 1 << 16)


class _Raw(io.RawIOBase):
    """A forward-only stream with `read` as a raw stream (to buffer it and read lines)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def lines_of(stream: IO[bytes]) -> io.BufferedReader:
    """A forward-only stream (an S3 body) buffered, with `readline`."""
    return io.BufferedReader(_Raw(stream), 1 << 16)

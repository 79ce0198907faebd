"""Objects under an S3 prefix: listed with pagination, streamed (never read whole), each within a deadline.

A body that breaks off (botocore checks Content-Length) or outlasts the deadline fails retryably, naming
the object: a truncated object is never kept as whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Any

from ... import secrets, storage
from ...api.datasource import S3Source
from . import InputRef, SourceError
from .deadline import Deadline


def client_for(source: S3Source) -> Any:
    creds = storage.S3Credentials(endpoint=source.endpoint, region=source.region)
    if source.credentials_secret is not None:
        name = source.credentials_secret.name
        try:
            creds.access_key_id = secrets.read_secret(name, "AWS_ACCESS_KEY_ID")
            creds.secret_access_key = secrets.read_secret(name, "AWS_SECRET_ACCESS_KEY")
        except secrets.MissingSecret as exc:
            raise SourceError(str(exc)) from None
        creds.session_token = secrets.read_optional(name, "AWS_SESSION_TOKEN")
    return storage.s3_client(creds)


def read_head(source: S3Source, uri: str, size: int) -> bytes:
    """The object's first `size` bytes (one ranged GET)."""
    try:
        return storage.read_range(uri, 0, size, client=client_for(source))
    except storage.StorageError as exc:
        raise SourceError(str(exc), retryable=exc.retryable) from exc


def list_objects(index: int, source: S3Source) -> list[InputRef]:
    uri = f"s3://{source.bucket}/{source.prefix}"
    try:
        entries = storage.list_files(uri, client=client_for(source))
    except storage.StorageError as exc:
        raise SourceError(f"spec.sources[{index}].s3: {exc}", retryable=exc.retryable) from exc
    return [InputRef(index, e.uri, e.size) for e in entries]


class _Body(IO[bytes]):
    """An object's body read under `deadline`: its socket is shut down when the deadline passes."""

    def __init__(self, body: Any, uri: str, deadline: Deadline) -> None:
        self._body, self._uri, self._deadline = body, uri, deadline
        with contextlib.suppress(AttributeError):  # botocore's own path to the socket (set_socket_timeout)
            deadline.watch(body._raw_stream._fp.fp.raw._sock)

    def read(self, size: int = -1) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            data = self._body.read(size if size >= 0 else None)
        except (BotoCoreError, OSError, ValueError) as exc:  # IncompleteRead, a reset, a read on a shut socket
            self._deadline.check()
            raise SourceError(f"{self._uri}: the download broke off ({exc})", retryable=True) from None
        self._deadline.check()
        return data

    def readable(self) -> bool:
        return True


@contextlib.contextmanager
def open_object(source: S3Source, uri: str, start: int = 0) -> Iterator[IO[bytes]]:
    """The object's body from byte `start` on (a ranged GET: a part reads only its own range)."""
    try:
        with Deadline(uri) as deadline, storage.open_read(uri, client=client_for(source), start=start) as body:
            yield _Body(body, uri, deadline)
    except storage.StorageError as exc:
        raise SourceError(str(exc), retryable=exc.retryable) from exc

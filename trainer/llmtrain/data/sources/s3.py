"""Objects under an S3 prefix: listed with pagination, streamed (never read whole)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Any

from ... import secrets, storage
from ...api.datasource import S3Source
from . import InputRef, SourceError


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


def list_objects(index: int, source: S3Source) -> list[InputRef]:
    uri = f"s3://{source.bucket}/{source.prefix}"
    try:
        entries = storage.list_files(uri, client=client_for(source))
    except storage.StorageError as exc:
        raise SourceError(f"spec.sources[{index}].s3: {exc}", retryable=exc.retryable) from exc
    return [InputRef(index, e.uri, e.size) for e in entries]


@contextlib.contextmanager
def open_object(source: S3Source, uri: str) -> Iterator[IO[bytes]]:
    try:
        with storage.open_read(uri, client=client_for(source)) as body:
            yield body
    except storage.StorageError as exc:
        raise SourceError(str(exc), retryable=exc.retryable) from exc

"""One place that reads, lists and writes storage URIs: local paths, `pvc://claim/path`, `s3://bucket/key`.

- `pvc://claim/path` is `$LLMTRAIN_PVC_ROOT/claim/path` (pods mount each claim there; the local runner
  points the variable at `<workdir>/volumes`).
- `s3://` uses boto3. The endpoint comes from `AWS_ENDPOINT_URL` (or `LLMTRAIN_S3_ENDPOINT`), credentials
  from the standard AWS variables or from explicit keys read from a mounted Secret.
- Writes are atomic: a local temp file renamed into place, or one S3 PUT/multipart upload, which S3
  makes visible only when complete. Callers write manifests and pointers last.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import MaybeRetryable

PVC_ROOT_ENV = "LLMTRAIN_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/llmtrain/pvc"


class StorageError(MaybeRetryable, OSError):
    """A storage operation failed; `retryable` says whether trying again may help."""


@dataclass(frozen=True)
class Entry:
    """A listed object: its URI, its name relative to the listed root, and its size."""

    uri: str
    relative: str
    size: int
    etag: str = ""  # S3's: tells a same-size object of another write apart


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def local_path(uri: str) -> Path:
    """The filesystem path of a local or `pvc://` URI."""
    if uri.startswith("pvc://"):
        claim_and_path = uri[len("pvc://") :]
        return Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT)) / claim_and_path
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported scheme; use s3://, pvc:// or a local path")
    return Path(uri)


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


@dataclass
class S3Credentials:
    """Explicit S3 settings for one source; None fields fall back to the environment."""

    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    endpoint: str | None = None
    region: str | None = None


def s3_client(credentials: S3Credentials | None = None) -> Any:
    import boto3
    from botocore.config import Config

    creds = credentials or S3Credentials()
    endpoint = creds.endpoint or os.environ.get("LLMTRAIN_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=creds.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def s3_error(uri: str, exc: Exception) -> StorageError:
    """A clear StorageError from a botocore exception; permanent for 4xx, retryable otherwise."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{uri}: no S3 credentials: set credentialsSecret or the AWS_* variables")
    if isinstance(exc, EndpointConnectionError):
        return StorageError(f"{uri}: cannot reach the S3 endpoint ({exc})", retryable=True)
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        hints = {
            "NoSuchBucket": "the bucket does not exist",
            "NoSuchKey": "no such object",
            "404": "no such object",
            "AccessDenied": "access denied: check the credentials Secret and the bucket policy",
            "InvalidAccessKeyId": "the access key is not known to the server: check the credentials Secret",
            "SignatureDoesNotMatch": "the secret key is wrong: check the credentials Secret",
        }
        return StorageError(f"{uri}: {hints.get(code, code or 'error')} (HTTP {status})", retryable=status >= 500)
    return StorageError(f"{uri}: {exc}", retryable=True)


def list_files(uri: str, pattern: str = "", client: Any = None) -> list[Entry]:
    """Files under `uri` whose relative name matches the glob `pattern` (all when empty), sorted."""
    if is_s3(uri):
        return _list_s3(uri, pattern, client or s3_client())
    root = local_path(uri)
    if root.is_file() and not pattern:
        return [Entry(str(root), root.name, root.stat().st_size)]
    entries = []
    if root.is_dir():
        for path in root.rglob("*") if not pattern else root.glob(pattern):
            if path.is_file():
                rel = path.relative_to(root).as_posix()
                entries.append(Entry(str(path), rel, path.stat().st_size))
    return sorted(entries, key=lambda e: e.relative)


def _list_s3(uri: str, pattern: str, client: Any) -> list[Entry]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(uri)
    entries = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :].lstrip("/")
                if rel and (not pattern or fnmatch.fnmatch(rel, pattern)):
                    entries.append(Entry(f"s3://{bucket}/{obj['Key']}", rel, obj["Size"], obj.get("ETag", "")))
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(uri, exc) from exc
    return sorted(entries, key=lambda e: e.relative)


@contextlib.contextmanager
def open_read(uri: str, client: Any = None, start: int = 0) -> Iterator[IO[bytes]]:
    """A binary stream of the object from byte `start` on (a ranged GET on S3); S3 bodies are streamed,
    never read whole."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        ranged = {"Range": f"bytes={start}-"} if start else {}
        try:
            body = (client or s3_client()).get_object(Bucket=bucket, Key=key, **ranged)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(uri, exc) from exc
        try:
            yield body
        finally:
            body.close()
    else:
        try:
            handle = local_path(uri).open("rb")
        except OSError as exc:
            raise StorageError(f"{uri}: {exc.strerror}") from exc
        with handle:
            handle.seek(start)
            yield handle


def read_bytes(uri: str, client: Any = None) -> bytes:
    with open_read(uri, client) as stream:
        return stream.read()


def read_range(uri: str, start: int, length: int, client: Any = None) -> bytes:
    """`length` bytes of the object from `start` (one ranged GET on S3); fewer only past its end."""
    if length <= 0:
        return b""
    if not is_s3(uri):
        try:
            with local_path(uri).open("rb") as handle:
                handle.seek(start)
                return handle.read(length)
        except OSError as exc:
            raise StorageError(f"{uri}: {exc.strerror}") from exc
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    byte_range = f"bytes={start}-{start + length - 1}"
    try:
        body = (client or s3_client()).get_object(Bucket=bucket, Key=key, Range=byte_range)["Body"]
        with contextlib.closing(body):
            return body.read()
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(uri, exc) from exc


def exists(uri: str, client: Any = None) -> bool:
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            (client or s3_client()).head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise s3_error(uri, exc) from exc
        except BotoCoreError as exc:  # the endpoint unreachable: retryable, naming the object
            raise s3_error(uri, exc) from exc
        return True
    return local_path(uri).exists()


def upload_file(path: Path, uri: str, client: Any = None, move: bool = False) -> None:
    """Put a finished local file at `uri` atomically (rename locally; a single PUT/multipart on S3).

    With `move`, a local source is moved (a rename on the same filesystem) instead of copied.
    """
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            (client or s3_client()).upload_file(str(path), bucket, key)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(uri, exc) from exc
        if move:
            path.unlink()
        return
    target = local_path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if move:
        shutil.move(path, temp)
    else:
        shutil.copyfile(path, temp)
    os.replace(temp, target)


def write_bytes(uri: str, data: bytes, client: Any = None) -> None:
    """Write `data` at `uri` atomically."""
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            (client or s3_client()).put_object(Bucket=bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(uri, exc) from exc
        return
    target = local_path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def download_tree(
    uri: str, target: Path, client: Any = None, reuse: bool = True, only: Collection[str] | None = None
) -> Path:
    """Copy every file under `uri` (or `only` those relative names) into `target`, each atomically. A file
    already there is kept only if it is the same object (size and ETag, recorded in `target/.downloaded.json`):
    a run recreated under the same name writes same-size objects with other bytes, and those must not be
    served from the cache. `reuse=False` downloads every file again (a local copy damaged after its download
    is replaced)."""
    record_path = target / ".downloaded.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    for entry in list_files(uri, client=client):
        if only is not None and entry.relative not in only:
            continue
        path = target / entry.relative
        if reuse and path.exists() and path.stat().st_size == entry.size and record.get(entry.relative) == entry.etag:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open_read(entry.uri, client) as stream, temp.open("wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        os.replace(temp, path)
        record[entry.relative] = entry.etag
    target.mkdir(parents=True, exist_ok=True)
    temp = record_path.with_name(f".downloaded.json.tmp-{os.getpid()}")
    temp.write_text(json.dumps(record))
    os.replace(temp, record_path)
    return target


def delete(uri: str, client: Any = None) -> None:
    """Remove one object or file; missing is fine."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        (client or s3_client()).delete_object(Bucket=bucket, Key=key)
        return
    with contextlib.suppress(FileNotFoundError):
        local_path(uri).unlink()


def delete_tree(uri: str, client: Any = None) -> None:
    """Remove everything under a prefix or directory."""
    if is_s3(uri):
        client = client or s3_client()
        bucket, _prefix = split_s3(uri)
        keys = [e.uri[len(f"s3://{bucket}/") :] for e in _list_s3(uri, "", client)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return
    shutil.rmtree(local_path(uri), ignore_errors=True)

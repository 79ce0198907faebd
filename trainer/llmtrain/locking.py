"""An exclusive lock on an output (a local or `pvc://` directory, or an S3 prefix): one writer at a time.

The lock is one object, `<output>/.lock`, holding its owner (host, which is the pod's name in a cluster,
and pid), a random token and an expiry. It is created atomically: `O_CREAT|O_EXCL` on a filesystem, a
conditional PUT (`If-None-Match: *`) on S3, read back to check the token (a store that ignored the
condition is caught there, though only when the other writer has already landed: weaker). A holder
renews the expiry every `ttl / 4` while it works. A lock past its expiry, or held by a process that is
gone from this host, is taken over (logged); any other held lock refuses the writer with `OutputLocked`
(exit 75: the Job retries later), naming the owner and the expiry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import storage

log = logging.getLogger("llmtrain.lock")

LOCK_NAME = ".lock"
#: How long a lock lives without renewal; the holder renews it every quarter of this.
LOCK_TTL_SECONDS = 600.0


#: Tokens of the locks this process holds now.
_HELD_HERE: set[str] = set()


class OutputLocked(storage.StorageError):
    """Another writer holds the output's lock (or took it over): transient, exit 75."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass
class Holder:
    """What a lock object says: who holds it, until when, and the token only the holder knows."""

    host: str
    pid: int
    token: str
    expires: float

    @property
    def owner(self) -> str:
        return f"{self.host}/pid {self.pid}"

    def to_bytes(self) -> bytes:
        expires_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))
        record = {"owner": self.owner, "host": self.host, "pid": self.pid, "token": self.token}
        return json.dumps({**record, "expires": self.expires, "expiresAt": expires_at}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        try:
            record = json.loads(data)
            return cls(str(record["host"]), int(record["pid"]), str(record["token"]), float(record["expires"]))
        except (ValueError, KeyError, TypeError):
            return None

    def is_stale(self, now: float) -> bool:
        """Past its expiry, or its process is gone from this host (or is this very process, restarted)."""
        if now > self.expires:
            return True
        if self.host != socket.gethostname():
            return False
        if self.pid == os.getpid():  # this process (a restarted container reuses pid 1) holds it only if
            return self.token not in _HELD_HERE  # it took it and has not released it
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _new_holder(ttl: float) -> Holder:
    return Holder(socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time() + ttl)


def _unreadable(modified: float) -> Holder:
    """A lock object without a readable record (a writer died while creating it): stale after the TTL."""
    return Holder("unknown", 0, "", modified + LOCK_TTL_SECONDS)


def _refusal(uri: str, held: Holder | None) -> OutputLocked:
    if held is None:
        who = "a writer that released it just now"
    else:
        who = f"{held.owner} until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(held.expires))}"
    return OutputLocked(
        f"{uri}: another ingest is writing this output: locked by {who}; retry later"
        " (if no ingest is running, delete the lock object)"
    )


class _LocalStore:
    """The lock as a file: created with O_EXCL, renewed and released only while it holds our token."""

    def __init__(self, uri: str) -> None:
        self.uri, self.path = uri, storage.local_path(uri)

    def create(self, holder: Holder) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(holder.to_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def read(self) -> Holder | None:
        try:
            data, modified = self.path.read_bytes(), self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        return Holder.from_bytes(data) or _unreadable(modified)

    def take_over(self, stale: Holder, holder: Holder) -> bool:
        """Move the stale lock aside, check it was that one, then create ours (a racing writer may win)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{holder.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self.create(holder)
        moved = Holder.from_bytes(aside.read_bytes())
        if moved is None or moved.token != stale.token:  # a fresh lock landed meanwhile: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink()
            return False
        aside.unlink()
        return self.create(holder)

    def renew(self, holder: Holder, renewed: Holder) -> bool:
        current = self.read()
        if current is None or current.token != holder.token:
            return False
        temp = self.path.with_name(f"{LOCK_NAME}.renew-{holder.token}")
        temp.write_bytes(renewed.to_bytes())
        os.replace(temp, self.path)
        return True

    def release(self, holder: Holder) -> None:
        current = self.read()
        if current is not None and current.token == holder.token:
            self.path.unlink(missing_ok=True)


class _S3Store:
    """The lock as an object: conditional PUTs (If-None-Match on create, If-Match on takeover and
    renewal) and a conditional DELETE, each checked by reading the object back."""

    def __init__(self, uri: str, client: Any = None) -> None:
        self.uri, self.client = uri, client or storage.s3_client()
        self.bucket, self.key = storage.split_s3(uri)
        self.etag = ""

    def _put(self, holder: Holder, **condition: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=holder.to_bytes(), **condition)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise storage.s3_error(self.uri, exc) from exc
        except BotoCoreError as exc:
            raise storage.s3_error(self.uri, exc) from exc
        time.sleep(0.05)  # settle, then read back: a store that ignored the condition is caught here
        current = self.read()
        return current is not None and current.token == holder.token

    def create(self, holder: Holder) -> bool:
        return self._put(holder, IfNoneMatch="*")

    def read(self) -> Holder | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            data = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise storage.s3_error(self.uri, exc) from exc
        except BotoCoreError as exc:
            raise storage.s3_error(self.uri, exc) from exc
        self.etag = response.get("ETag", "")
        modified = response.get("LastModified")
        return Holder.from_bytes(data) or _unreadable(modified.timestamp() if modified else time.time())

    def take_over(self, stale: Holder, holder: Holder) -> bool:
        current = self.read()
        if current is None:
            return self.create(holder)
        if current.token != stale.token:
            return False
        return self._put(holder, IfMatch=self.etag)

    def renew(self, holder: Holder, renewed: Holder) -> bool:
        current = self.read()
        if current is None or current.token != holder.token:
            return False
        return self._put(renewed, IfMatch=self.etag)

    def release(self, holder: Holder) -> None:
        with contextlib.suppress(Exception):
            current = self.read()
            if current is not None and current.token == holder.token:
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)


@dataclass
class OutputLock:
    """A held lock; `check()` raises OutputLocked once it has been lost (renewal failed)."""

    uri: str
    holder: Holder
    store: Any
    ttl: float
    lost: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.lost:
            raise OutputLocked(f"{self.uri}: {self.lost}; this writer stopped before its manifest")

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            renewed = Holder(self.holder.host, self.holder.pid, self.holder.token, time.time() + self.ttl)
            try:
                if not self.store.renew(self.holder, renewed):
                    self.lost = "the lock was taken over by another writer"
                    return
            except storage.StorageError as exc:
                log.warning("lock renewal failed", extra={"lock": self.uri, "detail": str(exc)})
                continue
            self.holder = renewed


def acquire(output: str, ttl: float = LOCK_TTL_SECONDS, client: Any = None) -> OutputLock:
    """Take the output's lock, or raise OutputLocked naming its holder."""
    uri = storage.join(output, LOCK_NAME)
    store = _S3Store(uri, client) if storage.is_s3(uri) else _LocalStore(uri)
    holder = _new_holder(ttl)
    for _attempt in range(3):  # the lock may be released between our create and our read
        if store.create(holder):
            break
        held = store.read()
        if held is None:
            continue
        if not held.is_stale(time.time()):
            raise _refusal(output, held)
        if store.take_over(held, holder):
            log.warning("stale lock taken over", extra={"lock": uri, "previousOwner": held.owner})
            break
    else:
        raise _refusal(output, store.read())
    _HELD_HERE.add(holder.token)
    lock = OutputLock(uri, holder, store, ttl)
    threading.Thread(target=lock._renew_until_stopped, daemon=True, name="lock-renewal").start()
    return lock


def release(lock: OutputLock) -> None:
    """Stop renewing and remove the lock object if it is still ours."""
    lock._stop.set()
    _HELD_HERE.discard(lock.holder.token)
    with contextlib.suppress(OSError):
        lock.store.release(lock.holder)


@contextlib.contextmanager
def held(output: str, ttl: float = LOCK_TTL_SECONDS) -> Iterator[OutputLock]:
    """The output's lock for the duration of the block; released on success and on failure."""
    lock = acquire(output, ttl)
    try:
        yield lock
    finally:
        release(lock)

"""A block cache of remote shards, shared by the ranks of one node, bounded in bytes.

A shard is read in blocks (`data.shards.BLOCK_BYTES`, one ranged GET each). A fetched block is verified
against its SHA-256 from the manifest, then stored as `blocks/<sha256>` under the cache directory (the
pod's scratch volume, which all its ranks share): written to a temporary file and renamed, so a reader
never sees part of a block. Names are the content's digest, so a dataset rewritten under the same URI
can never be served stale bytes. A lock stripe per digest prefix (`flock`) makes the ranks of a node
fetch a block once. After each store the least recently used blocks (by mtime, touched on every hit)
are deleted until the directory fits the budget; the block just stored is kept, and a reader holds its
block open, so another rank's eviction never pulls bytes from under a read.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import storage
from .loader import DataError

BUDGET_ENV = "LLMTRAIN_SHARD_CACHE_BYTES"
DEFAULT_BUDGET = 4 << 30


@dataclass(frozen=True)
class Block:
    """A byte range of a remote object and the SHA-256 its bytes must have."""

    uri: str
    start: int
    length: int
    sha256: str


@dataclass
class CacheStats:
    """What this process asked of the cache."""

    bytes_fetched: int = 0
    blocks_fetched: int = 0
    blocks_hit: int = 0
    blocks_evicted: int = 0


def budget_from_env() -> int:
    """The cache bound in bytes: `$LLMTRAIN_SHARD_CACHE_BYTES`, else 4 GiB."""
    value = os.environ.get(BUDGET_ENV, "")
    try:
        budget = int(value) if value else DEFAULT_BUDGET
    except ValueError:
        raise DataError(f"{BUDGET_ENV}={value!r}: expected a number of bytes") from None
    if budget <= 0:
        raise DataError(f"{BUDGET_ENV}={value!r}: expected a positive number of bytes")
    return budget


class BlockCache:
    """Verified blocks of remote objects in `directory`, at most `budget` bytes (plus the block in use)."""

    def __init__(self, directory: Path, budget: int, client: Any = None, stats_name: str = "") -> None:
        self.blocks = directory / "blocks"
        self.locks = directory / "locks"
        self.blocks.mkdir(parents=True, exist_ok=True)
        self.locks.mkdir(parents=True, exist_ok=True)
        self.budget = budget
        self.client = client
        self.stats = CacheStats()
        self.stats_path = directory / "stats" / f"{stats_name}.json" if stats_name else None
        if self.stats_path is not None:
            self._write_stats()
            atexit.register(self._write_final_stats)  # the hits too: a warm cache fetches nothing

    def read(self, block: Block, start: int, stop: int) -> bytes:
        """Bytes `start:stop` of `block` (offsets within the block), fetched first if no rank has it."""
        path = self.blocks / block.sha256
        data = self._read_cached(path, start, stop)
        if data is not None:
            self.stats.blocks_hit += 1
            return data
        with self._lock(block.sha256):
            data = self._read_cached(path, start, stop)  # another rank fetched it while this one waited
            if data is not None:
                self.stats.blocks_hit += 1
                return data
            content = self._fetch(block)
            self._store(path, content)
        self._evict(keep=path)
        self._write_stats()
        return content[start:stop]

    def _read_cached(self, path: Path, start: int, stop: int) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:  # an open file stays readable if another rank evicts it now
            with contextlib.suppress(OSError):
                _touch(fd)
            return os.pread(fd, stop - start, start)
        finally:
            os.close(fd)

    def _fetch(self, block: Block) -> bytes:
        if self.client is None and storage.is_s3(block.uri):
            self.client = storage.s3_client()
        content = storage.read_range(block.uri, block.start, block.length, self.client)
        if len(content) != block.length or hashlib.sha256(content).hexdigest() != block.sha256:
            raise DataError(
                f"{block.uri}: bytes {block.start}-{block.start + block.length - 1} differ from manifest.json"
                " (SHA-256): the shard was changed after the DataSource wrote it; rerun the DataSource"
            )
        self.stats.bytes_fetched += len(content)
        self.stats.blocks_fetched += 1
        return content

    def _store(self, path: Path, content: bytes) -> None:
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            temp.write_bytes(content)
            _touch(temp)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    @contextlib.contextmanager
    def _lock(self, digest: str) -> Iterator[None]:
        with (self.locks / digest[:2]).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used blocks until the directory fits the budget."""
        entries = self._entries()
        used = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if used <= self.budget:
                break
            if path == str(keep):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                self.stats.blocks_evicted += 1
            used -= size

    def _entries(self) -> list[tuple[int, int, str]]:
        """(mtime, size, path) of every stored block."""
        entries = []
        for entry in os.scandir(self.blocks):
            with contextlib.suppress(FileNotFoundError):
                if not entry.name.startswith("."):
                    status = entry.stat()
                    entries.append((status.st_mtime_ns, status.st_size, entry.path))
        return entries

    def used_bytes(self) -> int:
        """The bytes the stored blocks take (every rank's)."""
        return sum(size for _, size, _ in self._entries())

    def _write_final_stats(self) -> None:
        with contextlib.suppress(OSError):
            self._write_stats()

    def _write_stats(self) -> None:
        if self.stats_path is None:
            return
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.stats_path.with_name(f".{self.stats_path.name}.tmp-{os.getpid()}")
        temp.write_text(json.dumps(asdict(self.stats)))
        os.replace(temp, self.stats_path)


def _touch(target: int | Path) -> None:
    """Mark a block used now, in nanoseconds: the kernel's own timestamps are coarser than a fetch."""
    now = time.time_ns()
    os.utime(target, ns=(now, now))

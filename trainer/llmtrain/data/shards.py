"""Token shards: flat binary arrays of token ids (uint16 below 65,536 ids, else uint32).

Documents are concatenated, each followed by eos. A shard holds exactly `shard_tokens` tokens (the
last one fewer); it is written to a local staging file, then put in place atomically, then listed in
the manifest, which is written last. Besides the shard's SHA-256, the manifest lists one SHA-256 per
`BLOCK_BYTES` block of it, so a reader fetching byte ranges can verify what it fetched.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage

_SPLIT_MIX = np.uint64(0x9E3779B97F4A7C15)
BLOCK_BYTES = 4 << 20  # the unit a trainer fetches from S3 and verifies (`train/shard_cache.py`)
#: A shard's path below the output, as the manifest lists it; a reader follows no other.
SHARD_PATH = re.compile(r"(train|validation)/shard-([0-9]{5,}-)?[0-9]{5,}\.bin")
#: A SHA-256 as the manifest writes it (the block cache names its files by it).
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def validation_mask(hashes: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Deterministic split: a document is in validation when its mixed content hash falls below fraction."""
    with np.errstate(over="ignore"):
        x = hashes[:, 0] ^ (np.uint64(seed) * _SPLIT_MIX)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
    return (x.astype(np.float64) / 2.0**64) < fraction


@dataclass
class ShardInfo:
    path: str  # relative to the dataset root
    tokens: int
    sha256: str
    block_sha256: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "tokens": self.tokens,
            "sha256": self.sha256,
            "blockSize": BLOCK_BYTES,
            "blockSha256": self.block_sha256,
        }


class BlockHashes:
    """SHA-256 of every `BLOCK_BYTES` block of a byte stream fed in pieces of any size."""

    def __init__(self) -> None:
        self.digests: list[str] = []
        self._hash = hashlib.sha256()
        self._filled = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            piece, view = view[: BLOCK_BYTES - self._filled], view[BLOCK_BYTES - self._filled :]
            self._hash.update(piece)
            self._filled += len(piece)
            if self._filled == BLOCK_BYTES:
                self._close_block()

    def finish(self) -> list[str]:
        if self._filled:
            self._close_block()
        return self.digests

    def _close_block(self) -> None:
        self.digests.append(self._hash.hexdigest())
        self._hash, self._filled = hashlib.sha256(), 0


class ShardWriter:
    """Appends token ids of one split and rolls over to a new shard every `shard_tokens`."""

    def __init__(
        self, split: str, root_uri: str, dtype: np.dtype, shard_tokens: int, staging: Path, prefix: str = ""
    ) -> None:
        """`prefix` goes before each shard's number (`<split>/shard-<prefix><n>.bin`): a part's own shards."""
        self.split, self.root_uri, self.dtype, self.shard_tokens = split, root_uri, dtype, shard_tokens
        self.prefix = prefix
        self.staging = staging
        self.shards: list[ShardInfo] = []
        self.documents = 0
        self._handle: Any = None
        self._hash: Any = None
        self._blocks = BlockHashes()
        self._filled = 0

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards) + self._filled

    def _relative(self, index: int) -> str:
        return f"{self.split}/shard-{self.prefix}{index:05d}.bin"

    def _open(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        self._path = self.staging / f"{self.split}-{self.prefix}{len(self.shards):05d}.bin"
        self._handle = self._path.open("wb")
        self._hash = hashlib.sha256()
        self._blocks = BlockHashes()
        self._filled = 0

    def _finish(self) -> None:
        self._handle.close()
        relative = self._relative(len(self.shards))
        storage.upload_file(self._path, storage.join(self.root_uri, relative), move=True)
        self.shards.append(ShardInfo(relative, self._filled, self._hash.hexdigest(), self._blocks.finish()))
        self._handle = None
        self._filled = 0

    def add(self, tokens: np.ndarray, documents: int = 1) -> None:
        """Append a run of tokens (already in this writer's dtype)."""
        self.documents += documents
        while len(tokens):
            if self._handle is None:
                self._open()
            room = self.shard_tokens - self._filled
            chunk, tokens = tokens[:room], tokens[room:]
            data = chunk.tobytes()
            self._handle.write(data)
            self._hash.update(data)
            self._blocks.update(data)
            self._filled += len(chunk)
            if self._filled == self.shard_tokens:
                self._finish()

    def close(self) -> list[ShardInfo]:
        if self._handle is not None and self._filled:
            self._finish()
        elif self._handle is not None:
            self._handle.close()
            self._path.unlink()
        return self.shards


def read_shard(path: Path | str, dtype: str) -> np.ndarray:
    """A shard as a read-only memory map."""
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")

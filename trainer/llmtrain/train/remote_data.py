"""An `s3://` dataset read in place: each window's bytes come through the node's block cache.

No rank copies the dataset: `manifest.json` is read whole (it is small), and a shard is fetched only
in the blocks the rank's windows touch. Integrity moves from one SHA-256 per shard at start to one per
block when fetched (`blockSha256` in the manifest); a manifest written before block digests existed
makes each shard one block, fetched whole once and checked against the shard's SHA-256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from .loader import TOKENIZER_DIR, TOKENIZER_FILE, DataError, Dataset, TokenStream
from .shard_cache import Block, BlockCache


def shard_blocks(uri: str, shard: dict[str, Any], itemsize: int) -> list[Block]:
    """The blocks of one manifest shard: as its `blockSha256` lists them, else the whole shard as one."""
    size = int(shard["tokens"]) * itemsize
    digests, block_size = shard.get("blockSha256"), shard.get("blockSize")
    if digests is None:
        return [Block(uri, 0, size, str(shard["sha256"]))]
    if not isinstance(block_size, int) or block_size <= 0 or len(digests) != -(-size // block_size):
        raise DataError(f"{uri}: manifest.json's blockSize and blockSha256 do not fit the shard; rerun the DataSource")
    return [
        Block(uri, start, min(block_size, size - start), str(digest))
        for start, digest in zip(range(0, size, block_size), digests, strict=True)
    ]


class RemoteShard:
    """A remote shard as a `TokenStream` reads it: its length in tokens and contiguous slices."""

    def __init__(self, cache: BlockCache, blocks: list[Block], dtype: np.dtype, tokens: int) -> None:
        self.cache, self.blocks, self.dtype, self.tokens = cache, blocks, dtype, tokens
        self.block_size = blocks[0].length if blocks else 1

    def __len__(self) -> int:
        return self.tokens

    def __getitem__(self, index: slice, /) -> np.ndarray:
        start, stop, step = index.indices(self.tokens)
        if step != 1:
            raise TypeError("a remote shard reads contiguous slices only")
        first, end = start * self.dtype.itemsize, max(start, stop) * self.dtype.itemsize
        pieces, position = [], first
        while position < end:
            block = self.blocks[position // self.block_size]
            take = min(end, block.start + block.length) - position
            pieces.append(self.cache.read(block, position - block.start, position - block.start + take))
            position += take
        return np.frombuffer(b"".join(pieces), dtype=self.dtype)


@dataclass(frozen=True)
class RemoteDataset(Dataset):
    """A dataset on S3; `root` is the local cache directory its blocks are kept in."""

    uri: str
    cache: BlockCache

    @classmethod
    def open_remote(cls, uri: str, cache: BlockCache, client: Any = None) -> RemoteDataset:
        manifest_uri = storage.join(uri, "manifest.json")
        if not storage.exists(manifest_uri, client):
            raise DataError(f"{manifest_uri} does not exist: run the DataSource (llmtrain ingest) first, or fix --data")
        manifest = json.loads(storage.read_bytes(manifest_uri, client))
        return cls(Path(cache.blocks.parent), manifest, uri, cache)

    @property
    def location(self) -> str:
        return self.uri

    def tokenizer_json(self) -> bytes:
        uri = storage.join(self.uri, TOKENIZER_DIR, TOKENIZER_FILE)
        if not storage.exists(uri):
            raise DataError(f"{uri}: missing (the dataset's tokenizer); rerun the DataSource")
        return storage.read_bytes(uri)

    def verify_shards(self, part: int = 0, parts: int = 1) -> None:
        """Nothing to read up front: every block is checked against manifest.json as it is fetched."""

    def token_samples(self, split: str) -> list[np.ndarray]:
        """The first block's tokens of the split's first shard: the block digests already tie every shard
        to this manifest, so one sample checks that the tokenizer fits them, without fetching every shard."""
        shards = self.shards_of(split)
        return [shards[0][: shards[0].block_size // shards[0].dtype.itemsize]] if shards else []

    def shards_of(self, split: str) -> list[RemoteShard]:
        dtype = np.dtype(self.manifest["dtype"])
        shards = []
        for shard in self.manifest["splits"][split]["shards"]:
            blocks = shard_blocks(storage.join(self.uri, shard["path"]), shard, dtype.itemsize)
            shards.append(RemoteShard(self.cache, blocks, dtype, int(shard["tokens"])))
        return shards

    def stream(self, split: str) -> TokenStream:
        return TokenStream(self.shards_of(split))

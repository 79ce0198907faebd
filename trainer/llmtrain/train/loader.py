"""Batches from the token shards (memory-mapped, or read through the S3 block cache): deterministic by
(seed, step), sharded by rank.

The sequence windows of step s are drawn from a Philox stream keyed by (seed, s): the global batch
of a step is the same whatever happened before, so the data position is the step itself and resume
is exact. Rank r takes its slice of the global batch; validation uses fixed, non-overlapping windows
from the start of the validation split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..data.shards import SHA256_HEX, SHARD_PATH
from ..errors import BadInput

TOKENIZER_DIR, TOKENIZER_FILE = "tokenizer", "tokenizer.json"


class DataError(BadInput, ValueError):
    """The dataset is missing or does not fit the model (bad input, permanent)."""


@dataclass(frozen=True)
class Dataset:
    """The output of `llmtrain ingest` as the trainer needs it."""

    root: Path
    manifest: dict[str, Any]

    def __post_init__(self) -> None:
        """A manifest's shards name only shard files below the dataset, by well-formed digests (a reader
        follows these paths, and the block cache names its files by these digests)."""
        splits = self.manifest.get("splits") if isinstance(self.manifest, dict) else None
        for split in ("train", "validation"):
            for shard in ((splits or {}).get(split) or {}).get("shards") or []:
                digests = [shard.get("sha256"), *(shard.get("blockSha256") or [])] if isinstance(shard, dict) else []
                path = shard.get("path") if isinstance(shard, dict) else None
                if not isinstance(path, str) or not SHARD_PATH.fullmatch(path):
                    raise DataError(f"{self.location}: manifest.json lists a shard at {path!r}; rerun the DataSource")
                if not all(isinstance(d, str) and SHA256_HEX.fullmatch(d) for d in digests):
                    raise DataError(
                        f"{self.location}: manifest.json's digests of {path} are malformed; rerun the DataSource"
                    )

    @classmethod
    def open(cls, root: Path) -> Dataset:
        path = root / "manifest.json"
        if not path.exists():
            raise DataError(f"{path} does not exist: run the DataSource (llmtrain ingest) first, or fix --data")
        return cls(root, json.loads(path.read_text()))

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocabSize"])

    @property
    def location(self) -> str:
        """Where the dataset is, as messages name it."""
        return str(self.root)

    def tokenizer_json(self) -> bytes:
        """The dataset's tokenizer.json (what its shards' ids mean)."""
        path = self.root / TOKENIZER_DIR / TOKENIZER_FILE
        if not path.is_file():
            raise DataError(f"{path}: missing (the dataset's tokenizer); rerun the DataSource")
        return path.read_bytes()

    def check_token_range(self) -> None:
        """Every sampled token id must be below the vocabulary size (shards and tokenizer belong together)."""
        for split in ("train", "validation"):
            for sample in self.token_samples(split):
                if len(sample) and int(sample.max()) >= self.vocab_size:
                    raise DataError(
                        f"{self.location}: {split} shards hold token id {int(sample.max())}, but the tokenizer has"
                        f" {self.vocab_size} ids: shards and manifest come from different runs; rerun the DataSource"
                    )

    def token_samples(self, split: str) -> list[np.ndarray]:
        """The tokens `check_token_range` looks at: the first 2^20 of every shard."""
        return [array[: 1 << 20] for array in self.stream(split).arrays]

    def shards(self) -> list[dict[str, Any]]:
        """The manifest's shards of both splits, in order."""
        return [s for split in ("train", "validation") for s in self.manifest["splits"][split]["shards"]]

    def verify_shards(self, part: int = 0, parts: int = 1) -> None:
        """SHA-256 of every `parts`-th shard from `part` against the manifest (a full sequential read of
        them; the ranks of a run share the work, once per process start). Sizes are checked in `stream`."""
        for shard in self.shards()[part::parts]:
            path = self.root / shard["path"]
            if not path.is_file():
                raise DataError(f"{path}: missing (manifest.json lists it); rerun the DataSource")
            sha = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    sha.update(chunk)
            if sha.hexdigest() != shard.get("sha256"):
                raise DataError(
                    f"{path}: SHA-256 differs from manifest.json: the shard was changed after the DataSource wrote"
                    " it; rerun the DataSource"
                )

    def stream(self, split: str) -> TokenStream:
        shards = self.manifest["splits"][split]["shards"]
        arrays = []
        for shard in shards:
            path = self.root / shard["path"]
            if not path.exists() or path.stat().st_size != shard["tokens"] * np.dtype(self.manifest["dtype"]).itemsize:
                raise DataError(f"{path}: missing or not the size the manifest says; rerun the DataSource")
            arrays.append(np.memmap(path, dtype=self.manifest["dtype"], mode="r"))
        return TokenStream(arrays)


class TokenArray(Protocol):
    """What a stream reads of a shard: its length in tokens and contiguous slices (a memmap, or a remote
    shard read through `shard_cache`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> np.ndarray: ...


class TokenStream:
    """Several shards read as one token sequence."""

    def __init__(self, arrays: Sequence[TokenArray]) -> None:
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def window(self, start: int, length: int) -> np.ndarray:
        parts, position, end = [], start, start + length
        while position < end:
            shard = int(np.searchsorted(self.offsets, position, side="right") - 1)
            local = position - int(self.offsets[shard])
            take = min(end - position, len(self.arrays[shard]) - local)
            parts.append(self.arrays[shard][local : local + take])
            position += take
        return np.concatenate(parts).astype(np.int64)


@dataclass
class Batches:
    """Training and validation batches of one rank."""

    train: TokenStream
    validation: TokenStream
    seq_len: int
    micro_batch: int
    accumulation: int
    rank: int
    world: int
    seed: int

    def __post_init__(self) -> None:
        if len(self.train) <= self.seq_len + 1:
            raise DataError(
                f"the train split has {len(self.train)} tokens, fewer than maxSeqLen + 1 ({self.seq_len + 1}):"
                " add text or lower spec.model.maxSeqLen"
            )

    @property
    def global_sequences(self) -> int:
        return self.micro_batch * self.accumulation * self.world

    def _sequences(self, stream: TokenStream, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([stream.window(int(s), self.seq_len + 1) for s in starts])
        data = torch.from_numpy(rows)
        return data[:, :-1], data[:, 1:]

    def step(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches (inputs, targets) for optimizer step `step`."""
        generator = np.random.Generator(np.random.Philox(key=[self.seed, step]))
        starts = generator.integers(0, len(self.train) - self.seq_len - 1, size=self.global_sequences)
        per_rank = self.micro_batch * self.accumulation
        mine = starts[self.rank * per_rank : (self.rank + 1) * per_rank]
        return [
            self._sequences(self.train, mine[i * self.micro_batch : (i + 1) * self.micro_batch])
            for i in range(self.accumulation)
        ]

    def validation_batches(self, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Up to `count` micro-batches of fixed windows; every rank gets its own windows."""
        available = (len(self.validation) - 1) // self.seq_len
        if available < self.world * self.micro_batch:
            return []
        total = min(count * self.world * self.micro_batch, available)
        per_rank = total // self.world // self.micro_batch * self.micro_batch
        windows = np.arange(self.rank, per_rank * self.world, self.world) * self.seq_len
        return [
            self._sequences(self.validation, windows[i : i + self.micro_batch])
            for i in range(0, len(windows), self.micro_batch)
        ]

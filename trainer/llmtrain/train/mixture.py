"""A weighted mixture of datasets: which source each training window comes from, deterministically.

Window k of the run (k = step x global batch + position) belongs to the source whose share of [0, 1)
holds u_k = frac(k / golden ratio + seed phase), a Weyl sequence in exact 64-bit integer arithmetic: after
any n windows each source has n x share of them within a few windows (the sequence's discrepancy grows
as log n), a step's windows spread over every source, and the assignment is a function of (seed, step)
alone, so resume is exact. The window's start within its source is drawn from the step's Philox stream,
as for one dataset. With one source the batches are exactly `loader.Batches`' (the same windows as runs
trained before mixtures existed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .loader import Batches, DataError

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd
MicroBatches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Source:
    name: str
    share: float  # of the windows; the shares sum to 1
    batches: Batches  # its streams, and the shape of a step

    @property
    def train_tokens(self) -> int:
        return len(self.batches.train)


class Mixture:
    """The training and validation batches of one rank over one or more sources."""

    def __init__(self, sources: list[Source], seed: int) -> None:
        if not sources:
            raise DataError("no data: name a DataSource (spec.dataSourceRef or spec.data)")
        self.sources, self.seed = sources, seed
        first = sources[0].batches
        self.seq_len, self.micro_batch, self.accumulation = first.seq_len, first.micro_batch, first.accumulation
        self.rank, self.world = first.rank, first.world
        bounds = np.cumsum([s.share for s in sources])[:-1]
        self._bounds = np.array([min(int(b * 2.0**64), 2**64 - 1) for b in bounds], dtype=np.uint64)
        self._phase = np.uint64((seed * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % 2**64)
        self._highs = np.array([s.train_tokens - self.seq_len - 1 for s in sources], dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def global_sequences(self) -> int:
        return self.micro_batch * self.accumulation * self.world

    def assignment(self, first: int, count: int) -> np.ndarray:
        """The source index of windows first .. first + count - 1 of the run."""
        k = np.arange(first, first + count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            u = k * GOLDEN + self._phase
        return np.searchsorted(self._bounds, u, side="right")

    def windows(self, step: int) -> np.ndarray:
        """Windows of each source in optimizer step `step` (all ranks together)."""
        if len(self.sources) == 1:
            return np.array([self.global_sequences])
        count = self.global_sequences
        return np.bincount(self.assignment(step * count, count), minlength=len(self.sources))

    def step(self, step: int) -> MicroBatches:
        """This rank's micro-batches (inputs, targets) for optimizer step `step`."""
        if len(self.sources) == 1:
            return self.sources[0].batches.step(step)
        count = self.global_sequences
        which = self.assignment(step * count, count)
        generator = np.random.Generator(np.random.Philox(key=[self.seed, step]))
        starts = generator.integers(0, self._highs[which])
        per_rank = self.micro_batch * self.accumulation
        mine = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        rows = [
            self.sources[source].batches.train.window(int(start), self.seq_len + 1)
            for source, start in zip(which[mine], starts[mine], strict=True)
        ]
        data = torch.from_numpy(np.stack(rows))
        inputs, targets = data[:, :-1], data[:, 1:]
        size = self.micro_batch
        return [(inputs[i : i + size], targets[i : i + size]) for i in range(0, per_rank, size)]

    def validation(self, count: int) -> dict[str, MicroBatches]:
        """Up to `count` micro-batches of fixed windows of each source's validation split, by source."""
        return {s.name: s.batches.validation_batches(count) for s in self.sources}

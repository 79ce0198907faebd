"""Writing one checkpoint's files, in the background or in place: the state staged, DCP, digests, uploads.

`Writer.start` runs on the training thread at the save step. In the background mode it returns once the
state is copied aside: DCP's `DefaultStager` copies every tensor into CPU buffers that it keeps for the
next save (pinned and copied without blocking on GPUs, then synchronized), and the RNG states are
captured. A daemon thread then does the rest: DCP writes this rank's shards, then the RNG file, then
`after(directory)` (the caller's: hash this rank's files, upload them for s3://). That is DCP's
`async_save` with a thread (`AsyncCheckpointerType.THREAD`) unrolled, so that the same thread hashes and
uploads. DCP's collectives in that thread go over a gloo group of their own, never over the group the
training collectives use. One write at a time: the caller completes one before it starts the next (the
staging buffers are reused, and two DCP saves in flight deadlock). A process that ends leaves its write
unfinished, as a kill would: such a checkpoint has no meta.json and is never loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from ..pausepoints import pause_point
from . import rng
from .distributed import World

Digests = dict[str, dict[str, Any]]  # file name -> {"size", "sha256"}


@dataclass
class Write:
    """One checkpoint's write on this rank: its future yields what `after` returned (this rank's digests)."""

    step: int
    directory: Path
    future: Future[Digests]

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Digests:
        """Wait for the write; its error, if it failed."""
        return self.future.result()


class Writer:
    """`background`: a staging copy and a worker thread (one DCP group made here: every rank builds it)."""

    def __init__(self, world: World, background: bool) -> None:
        self.world, self.background = world, background
        self.stager: DefaultStager | None = None
        self.group: dist.ProcessGroup | None = None
        if background:
            cuda = world.device.type == "cuda"
            options = StagingOptions(
                use_pinned_memory=cuda, use_shared_memory=False, use_async_staging=False, use_non_blocking_copy=cuda
            )
            self.stager = DefaultStager(options)
            if world.distributed:
                self.group = dist.new_group(backend="gloo")

    def start(self, step: int, directory: Path, state: dict[str, Any], after: Callable[[Path], Digests]) -> Write:
        """Write `state` (DCP) and this rank's RNG states to `directory`, then run `after(directory)`;
        in the background mode this returns once the state is staged."""
        random_states = rng.capture()
        future: Future[Digests] = Future()
        if self.stager is None:
            self._run(future, step, directory, state, random_states, after)
            return Write(step, directory, future)
        staged = self.stager.stage(state)
        worker = threading.Thread(
            target=self._run,
            args=(future, step, directory, staged, random_states, after),
            name=f"checkpoint-{step}",
            daemon=True,
        )
        worker.start()
        return Write(step, directory, future)

    def _run(
        self,
        future: Future[Digests],
        step: int,
        directory: Path,
        state: dict[str, Any],
        random_states: bytes,
        after: Callable[[Path], Digests],
    ) -> None:
        try:
            pause_point(f"checkpoint-write:{step}")  # tests: the state staged, nothing of it written yet
            dcp.save(state, checkpoint_id=str(directory), process_group=self.group)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / rng.file_name(self.world.rank)).write_bytes(random_states)
            future.set_result(after(directory))
        except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
            future.set_exception(exc)

    def close(self) -> None:
        """Free the staging buffers (a write in flight is left to end with the process)."""
        if self.stager is not None:
            self.stager.close()
            self.stager = None

"""Versioned, sharded checkpoints (torch.distributed.checkpoint) with a `latest` pointer written last.

Layout under the checkpoint URI:
```
step-00000100/  .metadata  __0_0.distcp  __1_0.distcp ...  rng-0.safetensors ...  meta.json (written last)
latest          the name of the newest complete checkpoint (written after its meta.json)
best            the name of the complete checkpoint with the lowest validation loss
quarantine/     complete checkpoints that failed verification, moved aside on resume (never deleted)
```
Model and optimizer are saved sharded (each rank its shards) and load onto any world size. The
learning-rate schedule and the data position are functions of the step, stored in meta.json with the
tokens seen, losses, spec hash, world size, time and each file's size and SHA-256 (`files`); RNG states
are saved per rank. A directory without meta.json is an interrupted save: never loaded, removed by
retention. A complete checkpoint is never overwritten. A save is two calls: `begin` (at the save step: the
state staged and, in the background mode, written by a worker thread, `checkpoint_writer`) and `finish`
(on the training thread, every rank together, once the files are written: the digests gathered, meta.json,
the pointers, retention); `save` is both at once. Resume takes the newest complete checkpoint that
verifies, whatever `latest` says, and reports what it skipped. For `s3://` the checkpoint is written to
a local staging directory and each rank uploads its own files; rank 0 uploads the rest. A remote
checkpoint is judged on what storage holds: one that fails verification on its local copy is downloaded
again before it is skipped, and quarantine copies it (checked) before deleting the original.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from .. import storage
from ..errors import BadInput, exit_code_for
from ..pausepoints import pause_point
from . import checkpoint_meta, rng, safe_load
from .checkpoint_meta import name_of as _name
from .checkpoint_writer import Digests, Write, Writer
from .distributed import World, all_true, barrier
from .safe_load import CorruptCheckpoint

log = logging.getLogger("llmtrain.train")
META = "meta.json"
REMOVING = ".removing-"  # a dropped checkpoint's directory while a thread deletes it (background mode)


class CheckpointError(BadInput, ValueError):
    """A checkpoint that cannot be used with this spec (bad input, permanent)."""


@dataclass(frozen=True)
class Saved:
    step: int
    uri: str
    val_loss: float | None
    time: str
    best: tuple[str, dict[str, Any]] | None = None  # (name, meta.json) with the lowest validation loss


@dataclass(frozen=True)
class Pending:
    """A save begun: its files being written (`write`), meta.json's content captured at its step."""

    step: int
    meta: dict[str, Any]
    write: Write

    def written(self) -> bool:
        """Whether this rank's files are written (and uploaded): `finish` will not wait."""
        return self.write.done()


@dataclass
class Resumed:
    """What resume found: the checkpoint it loaded (None: a fresh start) and what it skipped, and why."""

    name: str | None
    meta: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


class Checkpointer:
    """`background`: `begin` returns once the state is staged, its files written by a worker thread."""

    def __init__(
        self, uri: str, world: World, keep_last: int, keep_best: int, staging: Path, background: bool = False
    ) -> None:
        self.uri, self.world, self.keep_last, self.keep_best = uri.rstrip("/"), world, keep_last, keep_best
        self.remote = storage.is_s3(uri)
        self.local = staging if self.remote else storage.local_path(uri)
        self.writer = Writer(world, background)
        #: the writing thread's S3 client, made here (creating boto3 clients is not thread-safe; using one is)
        self.upload_client = storage.s3_client() if self.remote and background else None
        self.removers: list[threading.Thread] = []  # background mode: dropped local checkpoints being deleted
        if world.is_main:
            self.local.mkdir(parents=True, exist_ok=True)
        barrier(world)

    @property
    def background(self) -> bool:
        return self.writer.background

    def close(self) -> None:
        """Free the staging buffers; let the removals of dropped checkpoints end."""
        self.writer.close()
        for remover in self.removers:
            remover.join()
        self.removers.clear()

    # -- reading ---------------------------------------------------------------------------------

    def _read_text(self, name: str) -> str | None:
        uri = storage.join(self.uri, name)
        try:
            return storage.read_bytes(uri).decode(errors="replace").strip() if storage.exists(uri) else None
        except storage.StorageError:
            return None

    def latest(self) -> str | None:
        """The checkpoint `latest` names, if it is a complete checkpoint directory inside the root."""
        name = checkpoint_meta.pointer_target(self._read_text("latest"))
        return name if name and self._read_text(f"{name}/{META}") is not None else None

    def meta(self, name: str) -> dict[str, Any]:
        """meta.json of a checkpoint, checked (CorruptCheckpoint when it cannot be believed)."""
        text = self._read_text(f"{name}/{META}")
        if text is None:
            raise CheckpointError(f"{storage.join(self.uri, name)} is incomplete (no {META})")
        return checkpoint_meta.parse(text, storage.join(self.uri, name, META), name)

    def _fetch(self, name: str, reuse: bool = True) -> Path:
        """A local directory holding the checkpoint's files (`reuse=False`: downloaded again, cache ignored)."""
        if not self.remote:
            return self.local / name
        return storage.download_tree(storage.join(self.uri, name), self.local / name, reuse=reuse)

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, expected_model: dict) -> Resumed:
        """Load the newest complete checkpoint that verifies; skipped ones are moved to quarantine/."""
        pointer = self._read_text("latest")
        complete = [n for n in reversed(self._present()) if self._read_text(f"{n}/{META}") is not None]
        skipped: list[str] = []
        for name in complete:
            try:
                meta = self._load_as_stored(name, model, optimizer, expected_model)
            except CorruptCheckpoint as exc:
                skipped.append(f"{name}: {exc}")
                continue
            self._quarantine(complete[: complete.index(name)])
            if checkpoint_meta.pointer_target(pointer) != name and not skipped:
                said = "is missing" if pointer is None else f"names {pointer[:80]!r}"
                skipped.append(f"`latest` {said}, not the newest complete checkpoint {name}")
            return Resumed(name, meta, skipped)
        if complete:
            raise CheckpointError(
                f"{self.uri}: no complete checkpoint verifies ({'; '.join(skipped)}); nothing was changed: restore"
                " the files, or move the checkpoints away to start over"
            )
        if pointer is not None:
            skipped.append(f"`latest` names {pointer[:80]!r}, but there is no complete checkpoint: starting at 0")
        return Resumed(None, {}, skipped)

    def _load_as_stored(
        self, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, expected_model: dict
    ) -> dict:
        """load; a remote checkpoint that fails verification is downloaded again and judged on what storage
        holds, so a local copy damaged after an earlier download never sends an intact one to quarantine."""
        try:
            return self.load(name, model, optimizer, expected_model)
        except CorruptCheckpoint as exc:
            if not self.remote:
                raise
            log.warning("checkpoint failed verification; downloading it again", extra={"error": str(exc)[:300]})
        return self.load(name, model, optimizer, expected_model, reuse=False)

    def load(
        self,
        name: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        expected_model: dict,
        reuse: bool = True,
    ) -> dict:
        """Restore model, optimizer and (same world size) RNG states after verifying the files; returns meta.json.
        `reuse=False` downloads a remote checkpoint again rather than trusting an earlier local copy."""
        where = storage.join(self.uri, name)
        meta = self.meta(name)
        if meta.get("model") != expected_model:
            raise CheckpointError(
                f"{where} holds a model of shape {meta.get('model')}, but the spec asks for"
                f" {expected_model}: use a new checkpoint URI (or the spec that made it)"
            )
        directory, files = self._fetch(name, reuse), meta["files"]
        rng_file = directory / rng.file_name(self.world.rank)
        restore_rng = meta.get("worldSize") == self.world.size and rng_file.name in files

        def verify() -> None:
            safe_load.check_sizes(directory, files)
            if restore_rng:
                safe_load.check_digest(rng_file, files)
            shapes = safe_load.tensor_shapes(directory, files)
            checkpoint_meta.check_shapes(checkpoint_meta.model_config(meta, f"{where}/{META}"), shapes, where)

        self._agree(verify, where)
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        try:
            safe_load.load_state(state, directory, files)
        except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
            raise _load_failure(exc, where) from None
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        if restore_rng:
            self._agree(lambda: rng.restore(rng_file), where)
        return meta

    def _agree(self, check: Any, where: str) -> None:
        """Run a per-rank check; when it fails on any rank, every rank raises (so all fall back together)."""
        problem = None
        try:
            check()
        except CorruptCheckpoint as exc:
            problem = exc
        if not all_true(problem is None, self.world):
            raise problem or CorruptCheckpoint(f"{where}: another rank found a file that does not verify (its log)")

    def _quarantine(self, names: list[str]) -> None:
        """Move complete checkpoints that failed verification to quarantine/ (kept, never loaded or deleted)."""
        if self.world.is_main:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            for name in names:
                target = storage.join(self.uri, "quarantine", f"{name}-{stamp}")
                if self.remote:
                    _copy_s3_tree(storage.join(self.uri, name), target)
                    storage.delete_tree(storage.join(self.uri, name))
                    shutil.rmtree(self.local / name, ignore_errors=True)
                else:
                    storage.local_path(target).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(self.local / name, storage.local_path(target))
                log.warning("checkpoint moved to quarantine", extra={"checkpoint": name, "to": target})
        barrier(self.world)

    # -- writing ---------------------------------------------------------------------------------

    def _mine(self, file: str) -> bool:
        """Whether this rank wrote (and so hashes and uploads) a file of a checkpoint directory."""
        own = file.startswith((f"__{self.world.rank}_", f"rng-{self.world.rank}."))
        return own or (self.world.is_main and file == safe_load.DCP_METADATA)

    def _digests(self, directory: Path) -> Digests:
        """Size and SHA-256 of each file of the checkpoint that this rank wrote."""
        return {p.name: safe_load.digest(p) for p in sorted(directory.iterdir()) if self._mine(p.name)}

    def _written(self, directory: Path) -> Digests:
        """After DCP's write, in the writing thread: this rank's files hashed and, for s3://, uploaded (no
        collectives here: they would meet the training's)."""
        files = self._digests(directory)
        if self.remote:
            for path in sorted(directory.iterdir()):
                if self._mine(path.name):
                    where = storage.join(self.uri, directory.name, path.name)
                    storage.upload_file(path, where, client=self.upload_client)
        return files

    def _gathered(self, mine: Digests) -> Digests:
        """Every rank's digests (each hashed its own files)."""
        if not self.world.distributed:
            return mine
        gathered: list[Any] = [None] * self.world.size
        torch.distributed.all_gather_object(gathered, mine)
        return {k: v for part in gathered for k, v in sorted(part.items())}

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> Saved:
        """Save, then meta.json, then the `latest` (and `best`) pointers, then retention; returns when done."""
        return self.finish(self.begin(step, model, optimizer, meta))

    def begin(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> Pending:
        """Start the save of the state after `step` steps (every rank): in the background mode this returns
        once the state is staged, so training may go on and change it. `finish` completes it."""
        name = _name(step)
        directory = self.local / name
        pause_point(f"checkpoint-save:{step}")  # tests: before anything of this save is written or read
        if self._read_text(f"{name}/{META}") is not None:  # every rank reads it: all refuse together
            raise CheckpointError(
                f"{storage.join(self.uri, name)} is a complete checkpoint already and is not overwritten: is another"
                " trainer writing to this checkpoint URI? Give each TrainingRun its own"
            )
        if self.world.is_main:
            shutil.rmtree(directory, ignore_errors=True)  # an interrupted earlier attempt
            if self.remote:
                storage.delete_tree(storage.join(self.uri, name))
        barrier(self.world)
        model_state, optim_state = get_state_dict(model, optimizer)
        write = self.writer.start(step, directory, {"model": model_state, "optim": optim_state}, self._written)
        return Pending(step, copy.deepcopy(meta), write)  # as at this step: training goes on changing its parts

    def finish(self, pending: Pending) -> Saved:
        """Complete a save (every rank, on the training thread): wait for the files, gather their digests,
        then meta.json, the `latest` (and `best`) pointers, retention."""
        step, name = pending.step, _name(pending.step)
        files = self._gathered(self._wait(pending))
        pause_point(f"checkpoint-meta:{step}")  # tests: the shards written, meta.json not yet
        saved_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        best = None
        if self.world.is_main:
            record = {**pending.meta, "step": step, "worldSize": self.world.size, "time": saved_at, "files": files}
            storage.write_bytes(storage.join(self.uri, name, META), json.dumps(record, indent=2).encode())
            storage.write_bytes(storage.join(self.uri, "latest"), name.encode())
            present = self._present()  # one listing serves the best pointer and retention
            complete = self._complete(present)
            best = _lowest_val_loss(complete)
            if best is not None:
                storage.write_bytes(storage.join(self.uri, "best"), best[0].encode())
            self._retain(present, complete)
        barrier(self.world)
        return Saved(step, storage.join(self.uri, name), pending.meta.get("valLoss"), saved_at, best)

    def _wait(self, pending: Pending) -> Digests:
        """This rank's digests once its files are written; a full disk is a clear error (its space given back)."""
        try:
            return pending.write.result()
        except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
            if not (_disk_full(exc) or shutil.disk_usage(self.local).free < 1 << 20):  # torch.save hides ENOSPC
                raise
        name = _name(pending.step)
        shutil.rmtree(self.local / name, ignore_errors=True)  # give the space back; it was never complete
        raise storage.StorageError(
            f"{storage.join(self.uri, name)}: no space left on device while saving step {pending.step}; the last"
            f" complete checkpoint ({self.latest() or 'none'}) is intact: free space on {self.local}, or"
            " lower spec.checkpointing.keepLast"
        ) from None

    def _present(self) -> list[str]:
        """Names of the checkpoint directories there (step-NNNNNNNN), complete or not, oldest first."""
        names = {e.relative.split("/")[0] for e in storage.list_files(self.uri) if "/" in e.relative}
        return sorted(n for n in names if checkpoint_meta.NAME.fullmatch(n))

    def _complete(self, present: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(name, meta.json) of the complete checkpoints whose meta.json is valid, oldest first."""
        found = []
        for name in self._present() if present is None else present:
            try:
                found.append((name, self.meta(name)))
            except (CheckpointError, CorruptCheckpoint):
                continue
        return found

    def best(self) -> tuple[str, dict[str, Any]] | None:
        return _lowest_val_loss(self._complete())

    def _retain(self, present: list[str], complete: list[tuple[str, dict[str, Any]]]) -> None:
        """Keep the newest keepLast and the best keepBest checkpoints; drop the rest and interrupted saves.
        A directory with a meta.json that is not valid is left alone: it is not ours to judge by deleting."""
        keep = {n for n, _ in complete[-self.keep_last :]}
        scored = sorted((m["valLoss"], n) for n, m in complete if m.get("valLoss") is not None)
        keep |= {n for _, n in scored[: self.keep_best]}
        valid = {n for n, _ in complete}
        for name in present:
            if name in keep or (name not in valid and self._read_text(f"{name}/{META}") is not None):
                continue
            self._remove(name)

    def _remove(self, name: str) -> None:
        """Delete a checkpoint directory. In the background mode a local one is renamed out of the root's
        names at once (atomic) and deleted by a thread, so the training thread does not wait for the unlinks;
        what a killed process left renamed is deleted at the next retention."""
        if self.remote or not self.background:
            storage.delete_tree(storage.join(self.uri, name))
            shutil.rmtree(self.local / name, ignore_errors=True)
            return
        trash = self.local / f"{REMOVING}{name}-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(self.local / name, trash)
        leftovers = [path for path in self.local.glob(f"{REMOVING}*") if path.is_dir()]
        self.removers = [remover for remover in self.removers if remover.is_alive()]
        remover = threading.Thread(target=_delete_all, args=(leftovers,), name=f"remove-{name}", daemon=True)
        remover.start()
        self.removers.append(remover)


def _delete_all(directories: list[Path]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def _load_failure(exc: BaseException, where: str) -> BaseException:
    """What a failed dcp.load means: a retryable storage error stays one; anything else is a corrupt file."""
    inner = [pair[0] for pair in getattr(exc, "failures", {}).values() if isinstance(pair, tuple) and pair]
    for candidate in [*inner, exc]:
        if isinstance(candidate, CorruptCheckpoint):
            return candidate
    if exit_code_for(exc) == 75 or any(exit_code_for(e) == 75 for e in inner):
        return exc
    detail = inner[0] if inner else exc
    return CorruptCheckpoint(f"{where}: cannot be loaded ({type(detail).__name__}: {str(detail)[:300]})")


def _copy_s3_tree(source: str, target: str) -> None:
    """Server-side copy of every object under a prefix, checked (names and sizes) before the caller deletes."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = storage.s3_client()
    bucket, _ = storage.split_s3(target)
    objects = storage.list_files(source, client=client)
    for entry in objects:
        _, key = storage.split_s3(entry.uri)
        _, new_key = storage.split_s3(storage.join(target, entry.relative))
        try:
            client.copy({"Bucket": bucket, "Key": key}, bucket, new_key)
        except (ClientError, BotoCoreError) as exc:
            raise storage.s3_error(f"{entry.uri} -> {target}", exc) from exc
    copied = {(e.relative, e.size) for e in storage.list_files(target, client=client)}
    if copied != {(e.relative, e.size) for e in objects}:
        raise storage.StorageError(
            f"{source}: the copy to {target} is incomplete; the original is kept", retryable=True
        )


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC anywhere in the chain (DCP wraps each rank's error in a CheckpointException)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _lowest_val_loss(complete: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]] | None:
    scored = [(n, m) for n, m in complete if m.get("valLoss") is not None]
    return min(scored, key=lambda item: (item[1]["valLoss"], item[1]["step"])) if scored else None

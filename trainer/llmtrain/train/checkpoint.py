"""Versioned, sharded checkpoints (torch.distributed.checkpoint) with a `latest` pointer written last.

Layout under the checkpoint URI:
```
step-00000100/  .metadata  __0_0.distcp  __1_0.distcp ...  rng-0.pt ...  meta.json (written last)
latest          the name of the newest complete checkpoint (written after its meta.json)
best            the name of the complete checkpoint with the lowest validation loss
```
Model and optimizer are saved sharded (each rank its shards) and load onto any world size. The
learning-rate schedule and the data position are functions of the step, stored in meta.json with the
tokens seen, losses, spec hash, world size and time; RNG states are saved per rank. A directory without
meta.json is an interrupted save: never loaded, removed by retention. For `s3://` the checkpoint is
written to a local staging directory and each rank uploads its own files; rank 0 uploads the rest.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from .. import storage
from .distributed import World, barrier

META = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used with this spec (bad input, permanent)."""


@dataclass(frozen=True)
class Saved:
    step: int
    uri: str
    val_loss: float | None
    time: str
    best: tuple[str, dict[str, Any]] | None = None  # (name, meta.json) with the lowest validation loss


def _name(step: int) -> str:
    return f"step-{step:08d}"


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    def __init__(self, uri: str, world: World, keep_last: int, keep_best: int, staging: Path) -> None:
        self.uri, self.world, self.keep_last, self.keep_best = uri.rstrip("/"), world, keep_last, keep_best
        self.remote = storage.is_s3(uri)
        self.local = staging if self.remote else storage.local_path(uri)
        if world.is_main:
            self.local.mkdir(parents=True, exist_ok=True)
        barrier(world)

    # -- reading ---------------------------------------------------------------------------------

    def _read_text(self, name: str) -> str | None:
        uri = storage.join(self.uri, name)
        try:
            return storage.read_bytes(uri).decode().strip() if storage.exists(uri) else None
        except storage.StorageError:
            return None

    def latest(self) -> str | None:
        """The name of the newest complete checkpoint, or None."""
        name = self._read_text("latest")
        return name if name and self._read_text(f"{name}/{META}") is not None else None

    def meta(self, name: str) -> dict[str, Any]:
        text = self._read_text(f"{name}/{META}")
        if text is None:
            raise CheckpointError(f"{storage.join(self.uri, name)} is incomplete (no {META})")
        return json.loads(text)

    def _fetch(self, name: str) -> Path:
        """A local directory holding the checkpoint's files."""
        if not self.remote:
            return self.local / name
        return storage.download_tree(storage.join(self.uri, name), self.local / name)

    def load(self, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, expected_model: dict) -> dict:
        """Restore model, optimizer and (same world size) RNG states; returns meta.json."""
        meta = self.meta(name)
        if meta.get("model") != expected_model:
            raise CheckpointError(
                f"{storage.join(self.uri, name)} holds a model of shape {meta.get('model')}, but the spec asks for"
                f" {expected_model}: use a new checkpoint URI (or the spec that made it)"
            )
        directory = self._fetch(name)
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(directory))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        rng = directory / f"rng-{self.world.rank}.pt"
        if meta.get("worldSize") == self.world.size and rng.exists():
            _restore_rng(torch.load(rng, weights_only=False))
        return meta

    # -- writing ---------------------------------------------------------------------------------

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict) -> Saved:
        """Save, then meta.json, then the `latest` (and `best`) pointers, then retention."""
        name = _name(step)
        directory = self.local / name
        if self.world.is_main:
            shutil.rmtree(directory, ignore_errors=True)  # an interrupted earlier attempt
            if self.remote:
                storage.delete_tree(storage.join(self.uri, name))
        barrier(self.world)
        model_state, optim_state = get_state_dict(model, optimizer)
        try:
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))
            torch.save(_rng_state(), directory / f"rng-{self.world.rank}.pt")
        except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
            if not (_disk_full(exc) or shutil.disk_usage(self.local).free < 1 << 20):  # torch.save hides ENOSPC
                raise
            shutil.rmtree(directory, ignore_errors=True)  # give the space back; it was never complete
            raise storage.StorageError(
                f"{storage.join(self.uri, name)}: no space left on device while saving step {step}; the last"
                f" complete checkpoint ({self.latest() or 'none'}) is intact: free space on {self.local}, or"
                " lower spec.checkpointing.keepLast"
            ) from None
        if self.remote:
            for path in sorted(directory.iterdir()):
                mine = path.name.startswith((f"__{self.world.rank}_", f"rng-{self.world.rank}."))
                if mine or (self.world.is_main and path.name == ".metadata"):
                    storage.upload_file(path, storage.join(self.uri, name, path.name))
        barrier(self.world)
        saved_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        best = None
        if self.world.is_main:
            record = {**meta, "step": step, "worldSize": self.world.size, "time": saved_at}
            storage.write_bytes(storage.join(self.uri, name, META), json.dumps(record, indent=2).encode())
            storage.write_bytes(storage.join(self.uri, "latest"), name.encode())
            present = self._present()  # one listing serves the best pointer and retention
            complete = self._complete(present)
            best = _lowest_val_loss(complete)
            if best is not None:
                storage.write_bytes(storage.join(self.uri, "best"), best[0].encode())
            self._retain(present, complete)
        barrier(self.world)
        return Saved(step, storage.join(self.uri, name), meta.get("valLoss"), saved_at, best)

    def _present(self) -> list[str]:
        """Names of the checkpoint directories there, complete or not."""
        names = {e.relative.split("/")[0] for e in storage.list_files(self.uri) if "/" in e.relative}
        return sorted(n for n in names if n.startswith("step-"))

    def _complete(self, present: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for name in self._present() if present is None else present:
            text = self._read_text(f"{name}/{META}")
            if text is not None:
                found.append((name, json.loads(text)))
        return found

    def best(self) -> tuple[str, dict[str, Any]] | None:
        return _lowest_val_loss(self._complete())

    def _retain(self, present: list[str], complete: list[tuple[str, dict[str, Any]]]) -> None:
        """Keep the newest keepLast and the best keepBest checkpoints; drop the rest and interrupted saves."""
        keep = {n for n, _ in complete[-self.keep_last :]}
        scored = sorted((m["valLoss"], n) for n, m in complete if m.get("valLoss") is not None)
        keep |= {n for _, n in scored[: self.keep_best]}
        for name in present:
            if name not in keep:
                storage.delete_tree(storage.join(self.uri, name))
                shutil.rmtree(self.local / name, ignore_errors=True)


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

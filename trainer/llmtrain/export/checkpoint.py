"""Finding a TrainingRun checkpoint (latest, best, a step, or a directory) and loading it whole.

A checkpoint saved sharded by any number of ranks loads into one full model in one process.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.checkpoint.api import CheckpointException

from .. import storage
from ..errors import BadInput
from ..model.llama import Llama, LlamaConfig
from ..train import checkpoint_meta, safe_load


class ExportError(BadInput, ValueError):
    """The export cannot be done as specified (bad input, permanent)."""


@dataclass(frozen=True)
class Found:
    uri: str  # the checkpoint directory
    meta: dict

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def resolve(uri: str, select: str = "latest", step: int | None = None) -> Found:
    """The checkpoint directory `uri` itself, or the one a run's checkpoint root selects (a pointer names a
    step-NNNNNNNN directory inside the root, nothing else)."""
    meta_uri = storage.join(uri, "meta.json")
    if storage.exists(meta_uri):
        return Found(uri.rstrip("/"), _meta(uri.rstrip("/")))
    if select == "step":
        if step is None:
            raise ExportError("checkpoint: step needs spec.step")
        name = checkpoint_meta.name_of(step)
    else:
        pointer = storage.join(uri, select)
        if not storage.exists(pointer):
            what = (
                "no checkpoint has been saved yet" if select == "latest" else "no checkpoint has a validation loss yet"
            )
            raise ExportError(
                f"{uri}: no '{select}' pointer ({what}); wait for the TrainingRun or pick another checkpoint"
            )
        text = storage.read_bytes(pointer).decode(errors="replace")
        name = checkpoint_meta.pointer_target(text)
        if name is None:
            raise ExportError(
                f"{pointer}: holds {text.strip()[:80]!r}, not the name of a checkpoint directory in {uri}"
                " (step-NNNNNNNN); pick the checkpoint with spec.checkpoint: step"
            )
    found = storage.join(uri, name)
    if not storage.exists(storage.join(found, "meta.json")):
        raise ExportError(f"{found}: no complete checkpoint there (missing or partially written)")
    return Found(found, _meta(found))


def _meta(directory: str) -> dict:
    """meta.json, checked: its step is the directory's, its `files` record sizes and digests."""
    where = storage.join(directory, "meta.json")
    return checkpoint_meta.parse(storage.read_bytes(where), where, directory.rsplit("/", 1)[-1])


def load(found: Found, cache: Path) -> Llama:
    """The full model in fp32 on the CPU, from files that match meta.json (sizes, then each file's SHA-256
    as it is read); nothing in them is unpickled as code."""
    if not storage.is_s3(found.uri):
        return _load_from(storage.local_path(found.uri), found)
    local = cache / found.uri.replace("s3://", "").replace("/", "_")
    try:
        return _load_from(storage.download_tree(found.uri, local), found)
    except safe_load.CorruptCheckpoint:  # judge the checkpoint on what S3 holds, not on a damaged cached copy
        return _load_from(storage.download_tree(found.uri, local, reuse=False), found)


def _load_from(directory: Path, found: Found) -> Llama:
    config = checkpoint_meta.model_config(found.meta, f"{found.uri}/meta.json")
    files = found.meta["files"]
    safe_load.check_sizes(directory, files)
    checkpoint_meta.check_shapes(config, safe_load.tensor_shapes(directory, files), found.uri)
    model = Llama(config)
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            safe_load.load_state(state, directory, files)
        except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
            inner = [pair[0] for pair in getattr(exc, "failures", {}).values() if isinstance(pair, tuple) and pair]
            corrupt = next((e for e in [*inner, exc] if isinstance(e, safe_load.CorruptCheckpoint)), None)
            if corrupt is not None:
                raise corrupt from None
            raise ExportError(f"{found.uri}: cannot load into the model meta.json describes ({exc})") from None
    model.load_state_dict(state["model"])
    return model.eval()


def check_spec(model: Llama, expected: LlamaConfig | None) -> None:
    if expected is not None and model.config != expected:
        raise ExportError(
            f"the checkpoint's model {model.config} does not match the TrainingRun's spec {expected}:"
            " export the checkpoint the spec made"
        )


@torch.no_grad()
def greedy(model: torch.nn.Module, prompt: list[int], tokens: int, logits_of=None) -> list[int]:
    """Greedy continuation without a cache: the reference every runtime must reproduce."""
    ids = list(prompt)
    for _ in range(tokens):
        inputs = torch.tensor([ids])
        logits = logits_of(inputs) if logits_of else model(inputs)
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]

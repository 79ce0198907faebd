"""Finding a TrainingRun checkpoint (latest, best, a step, or a directory) and loading it whole.

A checkpoint saved sharded by any number of ranks loads into one full model in one process.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from .. import storage
from ..model.llama import Llama, LlamaConfig


class ExportError(ValueError):
    """The export cannot be done as specified (bad input, permanent)."""


@dataclass(frozen=True)
class Found:
    uri: str  # the checkpoint directory
    meta: dict

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def resolve(uri: str, select: str = "latest", step: int | None = None) -> Found:
    """The checkpoint directory `uri` itself, or the one a run's checkpoint root selects."""
    meta_uri = storage.join(uri, "meta.json")
    if storage.exists(meta_uri):
        return Found(uri.rstrip("/"), json.loads(storage.read_bytes(meta_uri)))
    if select == "step":
        if step is None:
            raise ExportError("checkpoint: step needs spec.step")
        name = f"step-{step:08d}"
    else:
        pointer = storage.join(uri, select)
        if not storage.exists(pointer):
            what = (
                "no checkpoint has been saved yet" if select == "latest" else "no checkpoint has a validation loss yet"
            )
            raise ExportError(
                f"{uri}: no '{select}' pointer ({what}); wait for the TrainingRun or pick another checkpoint"
            )
        name = storage.read_bytes(pointer).decode().strip()
    found = storage.join(uri, name)
    if not storage.exists(storage.join(found, "meta.json")):
        raise ExportError(f"{found}: no complete checkpoint there (missing or partially written)")
    return Found(found, json.loads(storage.read_bytes(storage.join(found, "meta.json"))))


def load(found: Found, cache: Path) -> Llama:
    """The full model in fp32 on the CPU."""
    try:
        config = LlamaConfig(**found.meta["model"])
    except (KeyError, TypeError) as exc:
        raise ExportError(f"{found.uri}/meta.json does not describe a model: {exc}") from None
    directory = (
        storage.local_path(found.uri)
        if not storage.is_s3(found.uri)
        else storage.download_tree(found.uri, cache / found.uri.replace("s3://", "").replace("/", "_"))
    )
    model = Llama(config)
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        try:
            dcp.load(state, checkpoint_id=str(directory))
        except Exception as exc:  # DCP reports shape and key mismatches as CheckpointException
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

"""Starting weights (spec.init): a Hugging Face Llama directory or an llmtrain checkpoint, checked, then
loaded into the (sharded) model once, at step 0. A run with checkpoints of its own resumes from those.

`locate` reads only the description (config.json, or the checkpoint's meta.json) so the shape can be
resolved and checked before anything is built; `check_tokenizer` refuses weights whose vocabulary is not
the dataset's; `load` fills the model. Hugging Face weights are read from the safetensors files with
positioned reads: each rank reads only the rows of its own shards, into them (the full model is never
materialized on a rank of a sharded run). An llmtrain checkpoint loads through DCP (any world size),
with its AdamW moments when asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import logs, storage
from ..errors import BadInput
from ..model import hf_config, safetensors_files
from ..model.shape import LlamaConfig
from . import checkpoint_meta, safe_load
from .distributed import World, barrier
from .loader import TOKENIZER_FILE

log = logging.getLogger("llmtrain.train")
CONFIG = "config.json"
HUGGING_FACE, CHECKPOINT = "Hugging Face Llama", "llmtrain checkpoint"
#: Text both tokenizers must turn into the same ids: letters, digits, code, accents, CJK, emoji, whitespace.
PROBE = (
    "The quick brown fox jumps over the lazy dog. 0123456789 (a+b)*c != d; x = {'k': [1, 2]}\n"
    "\tnaïve café, Straße, Ünïcödé, 東京, 🙂 -- To be, or not to be: that is the question."
)


#: The largest tokenizer.json read beside the weights (Llama 3's is 9 MB).
MAX_TOKENIZER_BYTES = 256 << 20


class InitError(BadInput, ValueError):
    """Starting weights that cannot be used for this run (exit 2)."""


@dataclass(frozen=True)
class Origin:
    """Weights to start from: what they are, where, their shape, and (S3) the local copy of their files."""

    kind: str  # HUGGING_FACE or CHECKPOINT
    uri: str  # the model directory, or the checkpoint's step directory
    config: LlamaConfig
    directory: Path
    meta: dict[str, Any] | None = None  # a checkpoint's meta.json

    @property
    def description(self) -> str:
        """What status.initializedFrom says."""
        if self.meta is not None:
            return f"{self.uri} ({CHECKPOINT}, step {self.meta['step']})"
        return f"{self.uri} ({HUGGING_FACE})"


def locate(uri: str, select: str, step: int | None, cache: Path, world: World) -> Origin:
    """The starting weights at `uri`: a Hugging Face directory (config.json), a checkpoint directory
    (meta.json) or a checkpoint root (`select`: latest, best or step with `step`); nothing else."""
    if storage.exists(storage.join(uri, CONFIG)):
        directory = _local_copy(uri, cache, world, [CONFIG, safetensors_files.INDEX, TOKENIZER_FILE])
        config = hf_config.parse(read_small(directory / CONFIG, 1 << 20), storage.join(uri, CONFIG))
        return Origin(HUGGING_FACE, uri.rstrip("/"), config, directory)
    from ..export.checkpoint import ExportError, resolve

    if not storage.exists(storage.join(uri, "meta.json")) and not storage.exists(storage.join(uri, "latest")):
        raise InitError(
            f"spec.init: {uri} holds neither a Hugging Face model (config.json) nor an llmtrain checkpoint"
            " (meta.json, or a checkpoint root with `latest`): point it at one"
        )
    try:
        found = resolve(uri, select, step)
    except ExportError as exc:
        raise InitError(f"spec.init: {exc}") from None
    config = checkpoint_meta.model_config(found.meta, storage.join(found.uri, "meta.json"))
    return Origin(CHECKPOINT, found.uri, config, _local_directory(found.uri, cache), found.meta)


def _local_directory(uri: str, cache: Path) -> Path:
    """Where the files at `uri` are on this machine: in place when local, else their download's place."""
    if not storage.is_s3(uri):
        return storage.local_path(uri)
    return cache / "init" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def _local_copy(uri: str, cache: Path, world: World, only: list[str]) -> Path:
    """The files `only` at `uri` on this machine (downloaded under `cache` from S3)."""
    target = _local_directory(uri, cache)
    if storage.is_s3(uri):
        _download(uri, target, world, only)
    return target


def _download(uri: str, target: Path, world: World, only: list[str] | None) -> None:
    """Download once per node (local rank 0); every rank waits for it."""
    if world.local_rank == 0:
        storage.download_tree(uri, target, only=only)
    barrier(world)


def check_tokenizer(origin: Origin, vocab_size: int, tokenizer_json: bytes, source: str) -> None:
    """The dataset's tokenizer must be the weights': the same vocabulary size, and the same ids for PROBE
    (Hugging Face weights with a tokenizer.json) or the same vocabulary hash (checkpoints that record one)."""
    if origin.config.vocab_size != vocab_size:
        raise InitError(
            f"spec.init: the weights in {origin.uri} have a vocabulary of {origin.config.vocab_size} ids, the"
            f" dataset's tokenizer ({source}) {vocab_size}: train on a DataSource whose tokenizer is the model's"
            " (spec.tokenizer.from: the model's tokenizer.json)"
        )
    recorded = (origin.meta or {}).get("vocabularyHash")
    ours = vocabulary_hash(tokenizer_json, f"{source}/tokenizer/{TOKENIZER_FILE}")
    if recorded is not None and recorded != ours:
        raise InitError(
            f"spec.init: {origin.uri} was trained with another tokenizer (vocabulary hash {str(recorded)[:12]}) than"
            f" the dataset's ({source}, {ours[:12]}), though both have {vocab_size} ids"
        )
    theirs = origin.directory / TOKENIZER_FILE
    if origin.meta is None and theirs.is_file():
        ours_ids = probe_ids(tokenizer_json, f"{source}/tokenizer/{TOKENIZER_FILE}")
        their_ids = probe_ids(read_small(theirs, MAX_TOKENIZER_BYTES), f"{origin.uri}/{TOKENIZER_FILE}")
        if ours_ids != their_ids:
            at = next((i for i, pair in enumerate(zip(ours_ids, their_ids, strict=False)) if pair[0] != pair[1]), 0)
            raise InitError(
                f"spec.init: the dataset's tokenizer ({source}) and {origin.uri}/{TOKENIZER_FILE} both have"
                f" {vocab_size} ids but encode the probe text differently (token {at}: {ours_ids[at : at + 4]} vs"
                f" {their_ids[at : at + 4]}): train on a DataSource whose tokenizer is the model's"
            )
    elif origin.meta is None:
        logs.audit("InitTokenizerUnchecked", uri=origin.uri, reason=f"no {TOKENIZER_FILE}: only the vocabulary size")


def read_small(path: Path, limit: int) -> bytes:
    """A description file (config.json, tokenizer.json) read whole, refused above `limit` bytes."""
    if path.stat().st_size > limit:
        raise InitError(f"{path}: {path.stat().st_size} bytes, more than the {limit} such a file may have")
    return path.read_bytes()


def vocabulary_hash(tokenizer_json: bytes, where: str = "tokenizer.json") -> str:
    """SHA-256 of a tokenizer.json as canonical JSON (keys sorted): the same vocabulary, merges, normalizer
    and pre-tokenizer give the same hash whatever the file's formatting."""
    try:
        canonical = json.dumps(json.loads(tokenizer_json), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InitError(f"{where}: not a tokenizer.json ({exc})") from None
    return hashlib.sha256(canonical.encode()).hexdigest()


def probe_ids(tokenizer_json: bytes, where: str) -> list[int]:
    """The ids a tokenizer.json gives PROBE (no special tokens added)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(tokenizer_json.decode()).encode(PROBE, add_special_tokens=False).ids
    except Exception as exc:  # tokenizers raises plain Exceptions for files it cannot read
        raise InitError(f"{where}: not a tokenizer.json the tokenizers library reads ({str(exc)[:200]})") from None


def load(origin: Origin, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, world: World) -> None:
    """Fill the model (and with a checkpoint, when given, the optimizer's moments) from the origin."""
    if origin.meta is None:
        if optimizer is not None:
            raise InitError(
                f"spec.init.optimizerState: {origin.uri} is a {HUGGING_FACE}, which holds no optimizer state;"
                " unset optimizerState"
            )
        load_hugging_face(origin, model, world)
    else:
        _load_checkpoint(origin, model, optimizer, world)
    if world.is_main:
        logs.audit("Initialized", uri=origin.uri, kind=origin.kind, optimizerState=optimizer is not None)


def load_hugging_face(origin: Origin, model: torch.nn.Module, world: World) -> None:
    """Each parameter (each rank: the rows of its shard) read from the safetensors files and cast to its dtype."""
    if storage.is_s3(origin.uri):  # the shards the index names, now that it is here
        names = safetensors_files.file_names(origin.directory, origin.uri)
        _download(origin.uri, origin.directory, world, [CONFIG, safetensors_files.INDEX, TOKENIZER_FILE, *names])
    expected = {name: tuple(param.shape) for name, param in model.named_parameters()}
    found = safetensors_files.index_tensors(origin.directory, origin.uri)
    entries = safetensors_files.match(found, expected, origin.config.tie_embeddings, origin.uri)
    with torch.no_grad():
        for name, param in model.named_parameters():
            local, first = _local_rows(param)
            if local.numel():
                entries[name].read_rows_into(local, first)


def _local_rows(param: torch.Tensor) -> tuple[torch.Tensor, int]:
    """This rank's part of a parameter and the first row (dim 0) of the whole it holds: FSDP2 shards dim 0."""
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return param.data, 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    if tuple(shape[1:]) != tuple(param.shape[1:]) or any(offset[1:]):
        raise NotImplementedError(f"a parameter sharded beyond dim 0 ({param.placements}) cannot be read by rows")
    return param.to_local(), offset[0]


def _load_checkpoint(
    origin: Origin, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, world: World
) -> None:
    """An llmtrain checkpoint's model (and optimizer) state, verified file by file, onto any world size; the
    optimizer keeps this run's hyperparameters (only the moments and their step counts come along)."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    files, where = origin.meta["files"], origin.uri  # type: ignore[index]
    if storage.is_s3(origin.uri):  # downloaded only now: a run resuming from its own checkpoints never needs it
        _download(origin.uri, origin.directory, world, None)
    safe_load.check_sizes(origin.directory, files)
    checkpoint_meta.check_shapes(origin.config, safe_load.tensor_shapes(origin.directory, files), where)
    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
        safe_load.load_state(state, origin.directory, files)
        set_model_state_dict(model, state["model"])
        return
    hyper = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    safe_load.load_state(state, origin.directory, files)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for group, kept in zip(optimizer.param_groups, hyper, strict=True):
        group.update(kept)

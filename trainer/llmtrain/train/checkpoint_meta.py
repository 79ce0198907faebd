"""What a checkpoint says about itself, checked before it is believed: pointers, meta.json, shapes.

A pointer (`latest`, `best`) names a checkpoint directory directly inside the root (`step-NNNNNNNN`),
nothing else. meta.json must be a JSON object whose step is the directory's step, whose model is a
valid shape that the tensors in `.metadata` have, and whose `files` record each file's size and SHA-256.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import Any

import torch

from ..json_object import parse_object
from ..model.llama import Llama, LlamaConfig
from .safe_load import CorruptCheckpoint

NAME = re.compile(r"step-(\d{8})")
MAX_STEP = 99_999_999  # what a step-NNNNNNNN name can hold
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def name_of(step: int) -> str:
    return f"step-{step:08d}"


def pointer_target(text: str | None) -> str | None:
    """The checkpoint name a pointer's text holds, or None when it names anything else."""
    name = (text or "").strip()
    return name if NAME.fullmatch(name) else None


def parse(raw: bytes | str, where: str, name: str | None = None) -> dict[str, Any]:
    """meta.json, checked; `name` (a step-NNNNNNNN directory) must agree with its step."""
    meta = parse_object(raw, where, CorruptCheckpoint)
    step = meta.get("step")
    if not _is_int(step) or not 0 <= step <= MAX_STEP:
        raise CorruptCheckpoint(f"{where}: step {step!r} is not a whole number from 0 to {MAX_STEP}")
    match = NAME.fullmatch(name or "")
    if match and int(match.group(1)) != step:
        raise CorruptCheckpoint(f"{where}: step {step} is not the directory's step ({name})")
    for key in ("tokensSeen", "worldSize"):
        if key in meta and (not _is_int(meta[key]) or meta[key] < (1 if key == "worldSize" else 0)):
            raise CorruptCheckpoint(f"{where}: {key} {meta[key]!r} is not a valid count")
    for key in ("loss", "valLoss"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise CorruptCheckpoint(f"{where}: {key} {value!r} is not a number")
    _check_files(meta.get("files"), where)
    return meta


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_files(files: Any, where: str) -> None:
    if not isinstance(files, dict) or not files:
        raise CorruptCheckpoint(
            f"{where}: no file digests (`files`); it was written by an older llmtrain or changed: it cannot be"
            " verified, so it is not loaded"
        )
    for file, record in files.items():
        valid = (
            _FILE.fullmatch(file)
            and file not in (".", "..")
            and isinstance(record, dict)
            and _is_int(record.get("size"))
            and record["size"] >= 0
            and isinstance(record.get("sha256"), str)
            and _SHA256.fullmatch(record["sha256"])
        )
        if not valid:
            raise CorruptCheckpoint(f"{where}: files[{file!r}] is not a plain file name with a size and SHA-256")


def model_config(meta: dict[str, Any], where: str) -> LlamaConfig:
    """The model shape meta.json records, each field of the right type and range."""
    raw = meta.get("model")
    names = {f.name for f in fields(LlamaConfig)}
    if not isinstance(raw, dict) or not set(raw) <= names:
        raise CorruptCheckpoint(f"{where}: model is not a model shape ({raw!r})")
    for key, value in raw.items():
        if key == "tie_embeddings":
            ok = isinstance(value, bool)
        elif key in ("rope_theta", "norm_eps"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        else:
            ok = _is_int(value) and 0 < value < 1 << 31
        if not ok:
            raise CorruptCheckpoint(f"{where}: model.{key} {value!r} is out of range")
    try:
        return LlamaConfig(**raw)
    except TypeError as exc:
        raise CorruptCheckpoint(f"{where}: model is incomplete ({exc})") from None


def check_shapes(config: LlamaConfig, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """Every model tensor the checkpoint holds has the shape meta.json's model implies (none missing)."""
    if config.hidden_size % config.heads or config.heads % config.kv_heads:
        raise CorruptCheckpoint(f"{where}: model heads {config.heads}/{config.kv_heads} do not divide the width")
    with torch.device("meta"):
        expected = {f"model.{k}": tuple(v.shape) for k, v in Llama(config).state_dict().items()}
    for key, shape in expected.items():
        if shapes.get(key) != shape:
            raise CorruptCheckpoint(
                f"{where}: meta.json's model implies {key} of shape {list(shape)}, but the checkpoint holds"
                f" {list(shapes[key]) if key in shapes else 'none'}"
            )

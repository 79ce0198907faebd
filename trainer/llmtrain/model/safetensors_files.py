"""The safetensors files of a Hugging Face model directory, checked before a byte of tensor data is used.

A directory holds `model.safetensors`, or shards listed by `model.safetensors.index.json`. Each file's
header is read and checked against the file's length (a truncated copy is named, with the bytes it
lacks) and against the tensors the model needs: every one present once with its shape, a float dtype,
nothing a Llama of that shape does not have. Pickled weights (`pytorch_model.bin`) are refused: loading
them runs code.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .shape import ShapeMismatch

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
#: Tensors a Hugging Face Llama file may hold that our model rebuilds rather than loads.
IGNORED = re.compile(r".*rotary_emb\.inv_freq")
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
MAX_HEADER = 100 << 20
_FILE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}\.safetensors")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "consolidated.00.pth")


@dataclass(frozen=True)
class Entry:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # of the tensor's first byte in the file

    def read_rows_into(self, out: Any, first: int = 0) -> None:
        """Fill the torch tensor `out` with rows `first` .. `first + len(out)` of this tensor (dim 0), cast to
        its dtype: one positioned read, nothing else of the file mapped or read (a rank reads only its shard).
        A contiguous CPU `out` of the file's dtype is read into directly, with no copy."""
        import torch

        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[self.dtype]
        count = out.shape[0] if out.dim() else 1
        if tuple(out.shape[1:]) != self.shape[1:] or not 0 <= first <= first + count <= (self.shape or (1,))[0]:
            raise ValueError(f"rows {first}..{first + count} of {self.shape} into {tuple(out.shape)}")
        direct = out.dtype == dtype and out.device.type == "cpu" and out.is_contiguous()
        target = out if direct else torch.empty(out.shape, dtype=dtype)
        buffer = memoryview(target.reshape(-1).view(torch.uint8).numpy())
        row_bytes = math.prod(self.shape[1:]) * DTYPE_BYTES[self.dtype]
        with self.file.open("rb") as handle:
            read = os.preadv(handle.fileno(), [buffer], self.offset + first * row_bytes) if len(buffer) else 0
        if read != len(buffer):
            raise ShapeMismatch(f"{self.file}: shorter than its header says; copy it again")
        if not direct:
            out.copy_(target)


def file_names(directory: Path, where: str) -> list[str]:
    """The safetensors files the directory's weights are in (relative names), from its index or the single file."""
    index = directory / INDEX
    if index.is_file():
        if index.stat().st_size > MAX_HEADER:
            raise ShapeMismatch(f"{where}/{INDEX}: {index.stat().st_size} bytes, more than an index may have")
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ShapeMismatch(f"{where}/{INDEX}: not a safetensors index ({exc!r})") from None
        names = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        bad = [n for n in names if not isinstance(n, str) or not _FILE_NAME.fullmatch(n)]
        if bad or not names:
            raise ShapeMismatch(f"{where}/{INDEX}: weight_map names {bad[:3] or 'no files'}; expected shard file names")
        return names
    if (directory / SINGLE).is_file():
        return [SINGLE]
    pickled = [name for name in PICKLED if (directory / name).exists()]
    if pickled:
        raise ShapeMismatch(
            f"{where}: holds {pickled[0]} (pickled weights: loading it would run code); save the model with"
            " save_pretrained(safe_serialization=True) to get model.safetensors"
        )
    raise ShapeMismatch(f"{where}: no {SINGLE} and no {INDEX}: not a Hugging Face safetensors model directory")


def read_header(path: Path, where: str) -> dict[str, Entry]:
    """The tensors a safetensors file holds, each checked to lie within the file."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if length < 2 or length > MAX_HEADER or 8 + length > size:
            raise ShapeMismatch(f"{where}/{path.name}: truncated or not safetensors ({size} bytes); copy it again")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ShapeMismatch(f"{where}/{path.name}: its header is not valid JSON ({exc}); copy it again") from None
    data_bytes = size - 8 - length
    entries = {}
    for name, info in header.items() if isinstance(header, dict) else []:
        if name == "__metadata__":
            continue
        entries[name] = _entry(path, name, info, data_bytes, length, where)
    return entries


def _entry(path: Path, name: str, info: object, data_bytes: int, header_bytes: int, where: str) -> Entry:
    """One header entry: a float dtype, a shape and offsets that fit the file."""
    shape = info.get("shape") if isinstance(info, dict) else None
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    whole = [isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in [*(shape or []), *(offsets or [])]]
    if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2 or not all(whole):
        raise ShapeMismatch(f"{where}/{path.name}: the header entry of {name} is malformed")
    dtype, (start, end) = info.get("dtype"), offsets  # type: ignore[union-attr]
    if dtype not in DTYPE_BYTES:
        raise ShapeMismatch(
            f"{where}/{path.name}: {name} is {dtype}; only F32, F16 and BF16 weights load (not quantized ones)"
        )
    if end > data_bytes:
        raise ShapeMismatch(
            f"{where}/{path.name}: truncated: {name} ends at byte {end} of the tensor data, but the file holds"
            f" {data_bytes}; copy the file again"
        )
    if start > end or end - start != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise ShapeMismatch(f"{where}/{path.name}: {name}'s offsets do not fit its shape {shape}")
    return Entry(path, dtype, tuple(shape), 8 + header_bytes + start)


def index_tensors(directory: Path, where: str) -> dict[str, Entry]:
    """Every tensor of the directory's weights, by name, from the checked headers (a name in two files refused)."""
    found: dict[str, Entry] = {}
    for name in file_names(directory, where):
        path = directory / name
        if not path.is_file():
            raise ShapeMismatch(f"{where}: {INDEX} lists {name}, which is missing; copy the model again")
        for tensor, entry in read_header(path, where).items():
            if tensor in found:
                raise ShapeMismatch(f"{where}: {tensor} is in both {found[tensor].file.name} and {name}")
            found[tensor] = entry
    return found


def match(found: dict[str, Entry], expected: dict[str, tuple[int, ...]], tied: bool, where: str) -> dict[str, Entry]:
    """The entries for the model's parameters (`expected`: name -> shape), checked: none missing, none of
    another shape, nothing a Llama of this shape lacks. Tied embeddings may leave out lm_head.weight."""
    for name, shape in expected.items():
        if name not in found:
            hint = " (config.json's tie_word_embeddings is false)" if name == "lm_head.weight" else ""
            raise ShapeMismatch(f"{where}: the weights lack {name}{hint}; copy the model again")
        if found[name].shape != shape:
            raise ShapeMismatch(
                f"{where}: {name} has shape {list(found[name].shape)} in {found[name].file.name}, but config.json"
                f" describes a model whose {name} is {list(shape)}"
            )
    extra = [
        n for n in found if n not in expected and not IGNORED.fullmatch(n) and not (tied and n == "lm_head.weight")
    ]
    if extra:
        raise ShapeMismatch(
            f"{where}: holds {extra[0]}{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}, which a Llama"
            " of config.json's shape does not have"
        )
    return {name: found[name] for name in expected}

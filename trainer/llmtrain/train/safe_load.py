"""Reading checkpoint files without running code from them, and checking them against meta.json.

Nothing read from checkpoint storage is unpickled freely: DCP's `.metadata` goes through an unpickler
that builds only DCP's metadata classes and plain values; DCP's non-tensor entries (optimizer
hyperparameters) load with `torch.load(weights_only=True)`; RNG states are safetensors plus JSON
(`rng.py`). Every file a process reads is first checked against the size and SHA-256 that meta.json
records for it (`files`), so a flipped byte is a clear error naming the file, not a silent load.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, ReadItem

from ..errors import BadInput

DCP_METADATA = ".metadata"
#: The classes a DCP `.metadata` file may build (torch 2.x); anything else is refused unbuilt.
_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
}
_CHUNK = 1 << 20


class CorruptCheckpoint(BadInput):
    """A checkpoint file is not what meta.json records, or holds something other than data (exit 2)."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refused to build {module}.{name}")


def read_dcp_metadata(path: Path) -> Metadata:
    """A DCP `.metadata` file, built from DCP's own classes only."""
    try:
        metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CorruptCheckpoint(f"{path}: not a checkpoint metadata file ({exc}); it is not loaded") from None
    if not isinstance(metadata, Metadata):
        raise CorruptCheckpoint(f"{path}: not a checkpoint metadata file (a {type(metadata).__name__})")
    return metadata


def digest(path: Path) -> dict[str, Any]:
    """{"size", "sha256"} of a file, read sequentially."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


def check_sizes(directory: Path, files: dict[str, dict[str, Any]]) -> None:
    """Every recorded file is there with its recorded size (cheap: one stat each)."""
    for name, record in files.items():
        path = directory / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{path}: missing (meta.json lists it)")
        if path.stat().st_size != record["size"]:
            raise CorruptCheckpoint(
                f"{path}: {path.stat().st_size} bytes, but meta.json records {record['size']}: the file was changed"
                " or truncated after the save"
            )


def check_digest(path: Path, files: dict[str, dict[str, Any]]) -> None:
    """The file's SHA-256 is the one meta.json records for it (a file it does not list is refused)."""
    record = files.get(path.name)
    if record is None:
        raise CorruptCheckpoint(f"{path}: not listed in meta.json (not written by this checkpoint's save)")
    if digest(path) != {"size": record["size"], "sha256": record["sha256"]}:
        raise CorruptCheckpoint(f"{path}: SHA-256 differs from meta.json: the file was changed after the save")


class VerifyingReader(FileSystemReader):
    """DCP's file reader, checking each file against meta.json before reading it, unpickling nothing."""

    def __init__(self, directory: Path, files: dict[str, dict[str, Any]]) -> None:
        super().__init__(str(directory))
        self.directory, self.files = directory, files
        self.verified: set[str] = set()

    def _verify(self, name: str) -> None:
        if name not in self.verified:
            check_digest(self.directory / name, self.files)
            self.verified.add(name)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        self._verify(DCP_METADATA)
        metadata = read_dcp_metadata(self.directory / DCP_METADATA)
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Any:
        for item in plan.items:
            self._verify(Path(self.storage_data[item.storage_index].relative_path).name)
        return super().read_data(plan, planner)


class TensorsOnlyPlanner(DefaultLoadPlanner):
    """DCP's load planner, loading the non-tensor entries without unpickling code."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CorruptCheckpoint(f"entry {read_item.dest_index.fqn}: refused ({exc})") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def load_state(state: dict[str, Any], directory: Path, files: dict[str, dict[str, Any]]) -> None:
    """dcp.load into `state`, verifying and unpickling nothing."""
    dcp.load(state, storage_reader=VerifyingReader(directory, files), planner=TensorsOnlyPlanner())


def tensor_shapes(directory: Path, files: dict[str, dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a checkpoint holds, by key, from its verified `.metadata`."""
    check_digest(directory / DCP_METADATA, files)
    metadata = read_dcp_metadata(directory / DCP_METADATA)
    return {key: tuple(entry.size) for key, entry in metadata.state_dict_metadata.items() if hasattr(entry, "size")}

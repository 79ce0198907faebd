"""Which documents of a part are kept and which go to validation, read a chunk at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import storage
from ..api.datasource import DataSourceSpec
from .layout import stage_uri
from .parts import PartSet
from .shards import validation_mask

#: documents whose hashes and sizes are read at once
CHUNK_DOCUMENTS = 1 << 20


@dataclass
class Chunk:
    """Documents `start..start+len(kept)-1` of a part."""

    start: int
    hashes: np.ndarray
    sizes: np.ndarray
    kept: np.ndarray
    validation: np.ndarray


def load_dropped(output: str, work: Path) -> np.ndarray:
    """The sorted global indices of dropped documents (the cluster stage's `drop.npy`)."""
    uri = storage.join(stage_uri(output, "cluster"), "drop.npy")
    if storage.is_s3(uri):
        path = work / "drop.npy"
        path.write_bytes(storage.read_bytes(uri))
        return np.load(path, allow_pickle=False)
    return np.load(storage.local_path(uri), mmap_mode="r", allow_pickle=False)


def chunks(spec: DataSourceSpec, part_set: PartSet, index: int, dropped: np.ndarray) -> Iterator[Chunk]:
    """Part `index`'s documents in chunks, with the kept and validation masks."""
    files = part_set.files(index)
    offset = int(part_set.starts[index])
    for start in range(0, files.documents, CHUNK_DOCUMENTS):
        stop = min(files.documents, start + CHUNK_DOCUMENTS)
        hashes = files.slice("hashes.bin", np.uint64, 2 * start, 2 * stop).reshape(-1, 2)
        sizes = files.slice("sizes.bin", np.int64, start, stop)
        lo, hi = np.searchsorted(dropped, [offset + start, offset + stop])
        kept = np.ones(stop - start, dtype=bool)
        kept[np.asarray(dropped[lo:hi]) - offset - start] = False
        validation = validation_mask(hashes, spec.split.validation_fraction, spec.split.seed)
        yield Chunk(start, hashes, sizes, kept, validation)


def selected(part_set: PartSet, index: int, masks: Iterator[np.ndarray]) -> Iterator[tuple[int, str]]:
    """(local index, text) of part `index`'s documents where the chunk masks `masks` are True."""
    documents = part_set.files(index).documents_text()
    local = 0
    for mask in masks:
        if not mask.any():  # still read through: documents stream in order
            for _ in range(len(mask)):
                next(documents)
            local += len(mask)
            continue
        for chosen in mask.tolist():
            text = next(documents)
            if chosen:
                yield local, text
            local += 1


def picked(part_set: PartSet, index: int, masks: Iterator[np.ndarray]) -> Iterator[tuple[int, str]]:
    """(local index, text) of the few documents of part `index` the chunk masks `masks` choose, reading
    only the `docs.zst` frames that hold them (a sparse sample: most of the part is never read)."""
    wanted = [np.flatnonzero(mask) + start for start, mask in _starts(masks)]
    indices = np.concatenate(wanted) if wanted else np.zeros(0, np.int64)
    yield from part_set.files(index).documents_at(indices)


def _starts(masks: Iterator[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    start = 0
    for mask in masks:
        yield start, mask
        start += len(mask)

"""The encode stage: task `i` encodes part `i`'s kept documents into its own shards.

Documents are encoded in batches of `ENCODE_BATCH_BYTES` (`encode_batch`, native threads; a reader
thread decompresses the next documents meanwhile), each followed by eos, into
`<split>/shard-<part>-<n>.bin` of exactly `shardTokens` tokens (each part's last one fewer). The shard
list goes to `.work/encode-i-of-n/shards.json` for the manifest stage. Memory follows the batch size.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import logs, storage
from ..api.datasource import DataSource
from ..pausepoints import pause_point
from . import selection
from .layout import task_uri
from .parts import PartSet
from .scan import PREFETCH_DOCUMENTS, prefetch
from .shards import ShardWriter, token_dtype
from .tokenizer import Tokenizer

ENCODE_BATCH_BYTES = 4 << 20
SPLITS = ("train", "validation")


def _batches(documents: Iterable[tuple[int, str, bool]], max_bytes: int) -> Iterator[list[tuple[int, str, bool]]]:
    batch: list[tuple[int, str, bool]] = []
    size = 0
    for doc in documents:
        batch.append(doc)
        size += len(doc[1])
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _kept(resource: DataSource, part_set: PartSet, index: int, dropped: np.ndarray) -> Iterator[tuple[int, str, bool]]:
    """(local index, text, goes to validation) of the part's kept documents."""
    validation: list[tuple[int, np.ndarray]] = []

    def masks() -> Iterator[np.ndarray]:
        for chunk in selection.chunks(resource.spec, part_set, index, dropped):
            validation.append((chunk.start, chunk.validation))
            yield chunk.kept

    for local, text in selection.selected(part_set, index, masks()):
        start, mask = validation[-1]
        yield local, text, bool(mask[local - start])


def encode_part(
    resource: DataSource, part_set: PartSet, index: int, trained: Tokenizer, output: str, work: Path
) -> dict[str, Any]:
    """Encode part `index` into its shards; returns what the manifest needs of them."""
    started = time.monotonic()
    spec = resource.spec
    dtype = token_dtype(trained.vocab_size)
    eos = [trained.special_ids()["eos"]]
    writers = {
        split: ShardWriter(split, output, dtype, spec.output.shard_tokens, work / "staging", prefix=f"{index:05d}-")
        for split in SPLITS
    }
    progress = logs.Progress(f"encode part {index}")
    dropped = selection.load_dropped(output, work)
    for batch in _batches(prefetch(_kept(resource, part_set, index, dropped), PREFETCH_DOCUMENTS), ENCODE_BATCH_BYTES):
        encoded = trained.encode_batch([text for _, text, _ in batch])
        for split, chosen in (("validation", True), ("train", False)):
            rows = [ids for (_, _, to_validation), ids in zip(batch, encoded, strict=True) if to_validation == chosen]
            if rows:
                flat = np.fromiter(
                    itertools.chain.from_iterable(itertools.chain(ids, eos) for ids in rows),
                    dtype=dtype,
                    count=sum(len(ids) + 1 for ids in rows),
                )
                writers[split].add(flat, documents=len(rows))
        progress.advance(len(batch))
        pause_point("ingest-encode")  # a batch written, maybe a shard in place, the task not done
    progress.close()
    result = {
        split: {
            "documents": writer.documents,
            "tokens": writer.tokens,
            "shards": [s.to_json() for s in writer.close()],
        }
        for split, writer in writers.items()
    }
    result["seconds"] = round(time.monotonic() - started, 3)
    storage.write_bytes(
        storage.join(task_uri(output, "encode", index, len(part_set.uris)), "shards.json"), json.dumps(result).encode()
    )
    return result

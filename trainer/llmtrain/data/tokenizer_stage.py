"""The tokenizer stage (one pod): train the tokenizer on a bounded sample of the kept train split, or
import `spec.tokenizer.from`; put it in `<output>/tokenizer/`.

The sample is hash-chosen: a kept train document is in it when its mixed content hash falls below
`trainSampleBytes / (bytes of all kept train documents)`, so it is the same for any number of parts and
memory follows `trainSampleBytes`, not the corpus. Choosing it reads the parts' hashes and sizes; the
documents come from the `docs.zst` frames (about 1 MiB each) that hold sampled ones, so the time follows
the sample too, once the sample is a small share of the corpus. This stage also starts replacing the output: it keeps
the manifest being replaced in `.work/tokenizer/previous-manifest.json` (what may be deleted once the
new one is written) and deletes it before the first new file lands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..api.datasource import DataSource
from . import imported_tokenizer, selection, tokenizer
from .layout import MANIFEST, TOKENIZER_FILE, read_json, read_manifest, stage_uri
from .parts import PartSet

PREVIOUS_MANIFEST = "previous-manifest.json"
ENTRY = "tokenizer.json"


def sampled(hashes: np.ndarray, eligible: np.ndarray, rate: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        mixed = (hashes[:, 1] * np.uint64(0xD6E8FEB86659FD93)) >> np.uint64(11)
    return eligible & (mixed.astype(np.float64) / 2.0**53 < rate)


def _sample(resource: DataSource, part_set: PartSet, dropped: np.ndarray) -> Iterator[str]:
    spec = resource.spec
    count = len(part_set.uris)
    total = sum(
        int(c.sizes[c.kept & ~c.validation].sum())
        for i in range(count)
        for c in selection.chunks(spec, part_set, i, dropped)
    )
    rate = min(1.0, spec.tokenizer.train_sample_bytes / total) if total else 1.0
    for i in range(count):  # only the frames holding sampled documents are read
        masks = (sampled(c.hashes, c.kept & ~c.validation, rate) for c in selection.chunks(spec, part_set, i, dropped))
        for _, text in selection.picked(part_set, i, masks):
            yield text


def build(resource: DataSource, part_set: PartSet, output: str, base_dir: Path, work: Path) -> tokenizer.Tokenizer:
    spec = resource.spec
    if spec.tokenizer.from_uri is not None:
        source = imported_tokenizer.resolve(spec.tokenizer.from_uri, base_dir)
        return imported_tokenizer.load(spec.tokenizer, imported_tokenizer.fetch(source, work))
    return tokenizer.train(spec.tokenizer, _sample(resource, part_set, selection.load_dropped(output, work)))


def entry(resource: DataSource, trained: tokenizer.Tokenizer) -> dict[str, Any]:
    """The manifest's `tokenizer` entry."""
    described = {
        "type": trained.kind,
        "vocabSize": trained.vocab_size,
        "path": "tokenizer",
        "files": trained.files(),
        "specialTokens": {name: {"token": trained.special[name], "id": i} for name, i in trained.special_ids().items()},
    }
    if resource.spec.tokenizer.from_uri is not None:
        described["from"] = resource.spec.tokenizer.from_uri
    return described


def start_replacing(output: str) -> None:
    """Keep the manifest being replaced (once: a rerun keeps the first copy), then delete it."""
    kept = storage.join(stage_uri(output, "tokenizer"), PREVIOUS_MANIFEST)
    if not storage.exists(kept):
        try:
            previous = read_manifest(output) or {}
        except ValueError:
            previous = {}
        storage.write_bytes(kept, json.dumps(previous if isinstance(previous, dict) else {}).encode())
    storage.delete(storage.join(output, MANIFEST))


def publish(resource: DataSource, trained: tokenizer.Tokenizer, output: str, work: Path) -> dict[str, Any]:
    start_replacing(output)
    trained.save(work / "tokenizer")
    for name in trained.files():
        storage.upload_file(work / "tokenizer" / name, storage.join(output, "tokenizer", name))
    described = entry(resource, trained)
    storage.write_bytes(storage.join(stage_uri(output, "tokenizer"), ENTRY), json.dumps(described).encode())
    return described


def previous_manifest(output: str) -> dict[str, Any]:
    try:
        found = read_json(storage.join(stage_uri(output, "tokenizer"), PREVIOUS_MANIFEST))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def load_saved(output: str, work: Path) -> tokenizer.Tokenizer:
    """The tokenizer this stage put in `<output>/tokenizer/`."""
    described = read_json(storage.join(stage_uri(output, "tokenizer"), ENTRY))
    target = work / "tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    for name in described["files"]:
        if not isinstance(name, str) or not TOKENIZER_FILE.fullmatch(name):
            raise storage.StorageError(f"{output}/.work/tokenizer/{ENTRY}: bad file name {name!r}; rerun the stage")
        (target / name).write_bytes(storage.read_bytes(storage.join(output, "tokenizer", name)))
    return tokenizer.load(target)

"""The manifest stage: `manifest.json` from the parts' shard lists, written last; then what the
replaced manifest listed and the new one does not is deleted, and so is `.work`. Nothing else in the
output is deleted, and nothing through a symbolic link."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from .. import storage
from ..api.datasource import DataSource
from .layout import MANIFEST, TOKENIZER_FILE, WORK, EmptyCorpus, read_json, spec_hash, stage_uri, task_uri
from .parts import PartSet
from .shards import SHARD_PATH
from .stats import Stats
from .tokenizer_stage import ENTRY, previous_manifest

MANIFEST_VERSION = 1
SPLITS = ("train", "validation")


def gather_stats(part_set: PartSet, output: str, encoded: list[dict[str, Any]]) -> Stats:
    """The whole ingest's counts: the parts' scan stats, the dedup stages' and the shards'."""
    stats = part_set.scan_stats()
    clustered = read_json(storage.join(stage_uri(output, "cluster"), "DONE"))
    stats.duplicates_exact, stats.duplicates_near = clustered["duplicatesExact"], clustered["duplicatesNear"]
    stats.documents_out = stats.documents_valid - stats.duplicates_exact - stats.duplicates_near
    stats.seconds["dedup"] = clustered.get("dedupSeconds", 0.0) + clustered.get("seconds", 0.0)
    stats.seconds["tokenizer"] = read_json(storage.join(stage_uri(output, "tokenizer"), "DONE")).get("seconds", 0.0)
    stats.seconds["tokenize"] = max((e.get("seconds", 0.0) for e in encoded), default=0.0)
    stats.tokens_train = sum(e["train"]["tokens"] for e in encoded)
    stats.tokens_validation = sum(e["validation"]["tokens"] for e in encoded)
    stats.documents_train = sum(e["train"]["documents"] for e in encoded)
    stats.documents_validation = sum(e["validation"]["documents"] for e in encoded)
    return stats


def manifest(resource: DataSource, part_set: PartSet, output: str) -> dict[str, Any]:
    count = len(part_set.uris)
    encoded = [read_json(storage.join(task_uri(output, "encode", i, count), "shards.json")) for i in range(count)]
    stats = gather_stats(part_set, output, encoded)
    if not stats.tokens_train:
        raise EmptyCorpus("every kept document went to validation; lower spec.split.validationFraction")
    described = read_json(storage.join(stage_uri(output, "tokenizer"), ENTRY))
    eos = described["specialTokens"]["eos"]["id"]
    return {
        "version": MANIFEST_VERSION,
        "kind": "llmtrain.dev/dataset",
        "name": resource.name,
        "specHash": spec_hash(resource.spec),
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dtype": "uint16" if described["vocabSize"] <= 1 << 16 else "uint32",
        "tokenizer": described,
        "eosId": eos,
        "splits": {
            split: {
                "documents": sum(e[split]["documents"] for e in encoded),
                "tokens": sum(e[split]["tokens"] for e in encoded),
                "shards": [shard for e in encoded for shard in e[split]["shards"]],
            }
            for split in SPLITS
        },
        "stats": stats.to_json(),
    }


def write(output: str, written: dict[str, Any]) -> None:
    """The manifest in place, then the replaced manifest's leftovers and `.work` removed."""
    previous = previous_manifest(output)
    storage.write_bytes(storage.join(output, MANIFEST), json.dumps(written, indent=2).encode())
    remove_stale(output, previous, written)


def written_files(described: dict[str, Any]) -> set[str]:
    """The shard and tokenizer paths a manifest lists, as ingest names them (anything else is ignored)."""
    paths: set[str] = set()
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        for split in described.get("splits", {}).values():
            paths |= {s["path"] for s in split["shards"] if isinstance(s.get("path"), str)}
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        files = described.get("tokenizer", {}).get("files", [])
        paths |= {f"tokenizer/{n}" for n in files if isinstance(n, str) and TOKENIZER_FILE.fullmatch(n)}
    return {p for p in paths if SHARD_PATH.fullmatch(p) or p.startswith("tokenizer/")}


def remove_stale(output: str, previous: dict[str, Any], current: dict[str, Any]) -> None:
    """After the manifest is in place: drop the work folder, and the files the previous manifest listed
    that the new one does not. Nothing else is deleted, and nothing through a symbolic link."""
    for path in sorted(written_files(previous) - written_files(current)):
        if storage.is_s3(output) or _is_plain_file_below(storage.local_path(output), path):
            storage.delete(storage.join(output, path))
    work = storage.join(output, WORK)
    if storage.is_s3(output) or not storage.local_path(work).is_symlink():
        storage.delete_tree(work)


def _is_plain_file_below(root: Path, relative: str) -> bool:
    """`root/relative` is a regular file reached without following a link below `root`."""
    path, mode = root, 0
    for part in relative.split("/"):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return stat.S_ISREG(mode)

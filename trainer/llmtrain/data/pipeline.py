"""The ingest pipeline: scan (read, decode, normalize, filter, hash) in parts, then merge (dedup,
tokenizer, shards, manifest).

- `scan_part` reads part `i` of `n`: a contiguous run of units (whole inputs, record-aligned byte
  ranges or parquet row groups of large ones: `units.py`), and publishes it (`parts.py`); a part may
  be empty. N workers on one machine (`--workers`) or N pods of an Indexed Job
  (`--shard-index/--shard-count`) each scan one part; a finished part (DONE with the same spec hash)
  is not scanned again.
- `merge` loads every part's hashes and signatures, removes exact and near duplicates (`dedup/`),
  trains the tokenizer on a hash-sampled subset of the train split (or imports `spec.tokenizer.from`:
  `imported_tokenizer.py`), encodes the kept documents in batches and writes shards. The old manifest
  is deleted before the first shard is written and the new one is written last, so a manifest never
  points at partial data. Afterwards only the shards and tokenizer files the previous manifest listed
  (and the new one does not) are deleted, never through a symbolic link.
- Writing an output (a whole ingest, or a merge) holds its lock (`locking.py`): a second writer exits
  75 naming the holder. Scan pods of an Indexed Job write disjoint parts and take no lock.
The kept set is the same for any number of workers; shard bytes are identical for the same input and
worker count.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import queue
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from .. import locking, logs, storage
from ..api.datasource import DataSource, DataSourceSpec
from ..errors import BadInput, MaybeRetryable, Retryable
from ..pausepoints import pause_point
from . import imported_tokenizer, parts, tokenizer, units
from .dedup.exact import content_hash, first_occurrences
from .dedup.lsh import near_duplicates
from .dedup.minhash import MinHasher
from .formats import InputError, Raw, Rejected
from .normalize import Normalizer
from .shards import SHARD_PATH, ShardWriter, token_dtype, validation_mask
from .sources import list_inputs, read_input
from .stats import Stats
from .validate import Filter, decode

log = logging.getLogger("llmtrain.ingest")

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
PREFETCH_DOCUMENTS = 256
ENCODE_BATCH_BYTES = 4 << 20
#: the rejection reason of a document that made a cleaning stage raise
MALFORMED = "malformed"


class EmptyCorpus(BadInput, ValueError):
    """No document survived: bad input, with the counts that explain why."""


class LinkedOutput(BadInput):
    """A directory ingest writes into is a symbolic link: it would write (and delete) elsewhere."""


#: What ingest writes below an output; nothing else there is ever deleted.
OUTPUT_ENTRIES = ("train", "validation", "tokenizer", ".work", MANIFEST, locking.LOCK_NAME)
_TOKENIZER_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def spec_hash(spec: DataSourceSpec) -> str:
    """What the output depends on: the spec less where it is written and how it is run."""
    content = spec.to_wire()
    for key in ("image", "resources", "workers"):
        content.pop(key, None)
    content.get("output", {}).pop("uri", None)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _prefetch(items: Iterator[Any], size: int) -> Iterator[Any]:
    """Reads `items` in a thread into a bounded queue: I/O overlaps processing, memory stays bounded."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=size)
    done = object()

    def produce() -> None:
        try:
            for item in items:
                buffer.put(item)
        except BaseException as exc:  # handed to the consumer
            buffer.put(exc)
        buffer.put(done)

    threading.Thread(target=produce, daemon=True, name="ingest-reader").start()
    while (item := buffer.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _documents(spec: DataSourceSpec, work: list[units.Unit], stats: Stats) -> Iterator[tuple[str, Raw | Rejected]]:
    """(input name, document) of every unit in turn; a unit that cannot be read on is counted. An input
    is counted once, by its first unit."""
    limit = spec.validation.max_chars * 4
    for unit in work:
        ref = unit.input
        if unit.start == 0:
            stats.inputs += 1
        try:
            for item in read_input(ref, spec, limit, unit.byte_range, unit.row_group_range):
                yield ref.uri, item
        except InputError as exc:
            stats.rejected[exc.reason] += 1
            log.warning("input skipped", extra={"input": ref.uri, "reason": exc.reason, "detail": str(exc)})


@dataclass
class _Cleaned:
    """A kept document, ready for the part."""

    text: str
    content_hash: tuple[int, int]
    signature: np.ndarray | None
    shingles: np.ndarray | None


def _stops_the_run(exc: Exception) -> bool:
    """Whether an error stops the whole run rather than one document: a transient failure, storage,
    memory."""
    if isinstance(exc, (Retryable, storage.StorageError, MemoryError)):
        return True
    return (isinstance(exc, MaybeRetryable) and exc.retryable) or type(exc).__name__ == "OutOfMemoryError"


class _Cleaner:
    """Decodes, repairs, normalizes, filters and hashes one document at a time. A document that makes
    a stage raise is a counted `malformed` rejection, logged once per exception type with the input's
    name (never its text); errors that stop the run (`_stops_the_run`) propagate."""

    def __init__(self, spec: DataSourceSpec, stats: Stats) -> None:
        self.stats = stats
        self.normalize, self.keep = Normalizer(spec.normalization), Filter(spec.validation)
        minhash = spec.dedup.minhash
        self.hasher = MinHasher(minhash.num_perm, minhash.ngram, minhash.seed) if minhash.enabled else None
        self._logged: set[str] = set()

    def __call__(self, content: bytes | str, name: str) -> _Cleaned | None:
        """The cleaned document, or None when it is rejected (and counted)."""
        try:
            outcome = self._clean(content)
        except Exception as exc:
            if _stops_the_run(exc):
                raise
            self._log_malformed(exc, name)
            outcome = MALFORMED
        if isinstance(outcome, str):
            self.stats.rejected[outcome] += 1
            return None
        return outcome

    def _clean(self, content: bytes | str) -> _Cleaned | str:
        """The cleaned document, or the reason it is rejected."""
        decoded = decode(content)
        if decoded.text is None:
            return decoded.reason or "undecodable"
        self.stats.repaired += decoded.repaired
        text = self.normalize(decoded.text)
        reason = self.keep.reason_to_reject(text)
        if reason:
            return reason
        signature, shingles = self.hasher.signature_and_shingles(text) if self.hasher else (None, None)
        return _Cleaned(text, content_hash(text), signature, shingles)

    def _log_malformed(self, exc: Exception, name: str) -> None:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(
                "document rejected as malformed (further ones with this error are only counted)",
                extra={"input": name, "reason": MALFORMED, "error": kind},
            )


def scan_part(spec_wire: dict[str, Any], work: list[units.Unit], uri: str, base_dir: str) -> dict[str, Any]:
    """Scan the units `work` into the part at `uri`; returns the part's stats. (A process-pool entry point.)"""
    logs.setup()
    spec = DataSourceSpec.model_validate(spec_wire)
    started = time.monotonic()
    stats = Stats()
    clean = _Cleaner(spec, stats)
    with tempfile.TemporaryDirectory(prefix="llmtrain-part-") as staging:
        writer = parts.PartWriter(Path(staging), spec.dedup.minhash.num_perm if spec.dedup.minhash.enabled else 0)
        progress = logs.Progress(f"scan {uri.rsplit('/', 1)[-1]}")
        for name, item in _prefetch(_documents(spec, work, stats), PREFETCH_DOCUMENTS):
            stats.documents_in += 1
            progress.advance()
            if isinstance(item, Rejected):
                stats.rejected[item.reason] += 1
                continue
            content = item.content
            stats.bytes_in += len(content) if isinstance(content, bytes) else len(content.encode("utf-8", "replace"))
            cleaned = clean(content, name)
            if cleaned is not None:
                stats.documents_valid += 1
                writer.add(cleaned.text, cleaned.content_hash, cleaned.signature, cleaned.shingles)
        progress.close()
        stats.seconds["scan"] = time.monotonic() - started
        record = {**stats.scan_json(), "specHash": spec_hash(spec)}
        writer.publish(uri, record)
    log.info("part scanned", extra={"part": uri, "documents": stats.documents_valid})
    return record


def _part_is_current(uri: str, digest: str) -> bool:
    if not parts.is_done(uri):
        return False
    try:
        return json.loads(storage.read_bytes(storage.join(uri, "stats.json"))).get("specHash") == digest
    except (OSError, ValueError):
        return False


def scan(
    resource: DataSource, output: str, base_dir: Path, workers: int, index: int | None = None, count: int | None = None
) -> list[str]:
    """Scan every part not already done (or only part `index` of `count`); returns the part URIs."""
    spec = resource.spec
    count = count or workers
    inputs = list_inputs(spec, base_dir)
    if not inputs:
        raise EmptyCorpus("spec.sources: no input files, objects or URLs matched")
    digest = spec_hash(spec)
    uris = [parts.part_uri(output, i, count) for i in range(count)]
    todo = [i for i in (range(count) if index is None else [index]) if not _part_is_current(uris[i], digest)]
    divided = units.divide(spec, inputs, count) if todo else []
    jobs = [(spec.to_wire(), divided[i], uris[i], str(base_dir)) for i in todo]
    if len(jobs) > 1 and workers > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("fork")) as pool:
            list(pool.map(scan_part, *zip(*jobs, strict=True)))
    else:
        for job in jobs:
            scan_part(*job)
    return uris


def _sample_mask(hashes: np.ndarray, sizes: np.ndarray, eligible: np.ndarray, budget: int) -> np.ndarray:
    total = int(sizes[eligible].sum())
    rate = min(1.0, budget / total) if total else 1.0
    with np.errstate(over="ignore"):
        mixed = (hashes[:, 1] * np.uint64(0xD6E8FEB86659FD93)) >> np.uint64(11)
    return eligible & (mixed.astype(np.float64) / 2.0**53 < rate)


def _select(readers: list[parts.PartReader], mask: np.ndarray) -> Iterator[tuple[int, str]]:
    """(global index, text) of the documents whose mask entry is True, in part order."""
    offset = 0
    for reader in readers:
        count = len(reader.hashes)
        local = mask[offset : offset + count]
        if local.any():
            for i, text in enumerate(reader.documents()):
                if local[i]:
                    yield offset + i, text
        offset += count


def _batches(documents: Iterable[tuple[int, str]], max_bytes: int) -> Iterator[list[tuple[int, str]]]:
    batch: list[tuple[int, str]] = []
    size = 0
    for doc in documents:
        batch.append(doc)
        size += len(doc[1])
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def merge(
    resource: DataSource,
    output: str,
    part_uris: list[str],
    stats: Stats,
    lock: locking.OutputLock | None = None,
    base_dir: Path = Path("."),
) -> dict[str, Any]:
    """Dedup, tokenizer, shards and the manifest (written last, while `lock` is still held)."""
    pause_point("ingest-merge")  # the scan parts written, the shards not yet
    for uri in part_uris:
        if not parts.is_done(uri):
            raise storage.StorageError(f"{uri}: part not finished; scan it first", retryable=True)
    work = Path(tempfile.mkdtemp(prefix="llmtrain-merge-"))
    try:
        return _merge(resource, output, part_uris, stats, work, lock, base_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _merge(
    resource: DataSource,
    output: str,
    part_uris: list[str],
    stats: Stats,
    work: Path,
    lock: locking.OutputLock | None,
    base_dir: Path,
) -> dict[str, Any]:
    spec = resource.spec
    readers = [parts.PartReader(uri, work) for uri in part_uris]
    for reader in readers:
        stats.add(Stats.from_json(reader.stats))
    hashes = np.concatenate([r.hashes for r in readers]) if readers else np.zeros((0, 2), np.uint64)
    sizes = np.concatenate([r.sizes for r in readers]) if readers else np.zeros(0, np.int64)
    keep = _deduplicate(spec, readers, hashes, stats)
    validation = validation_mask(hashes, spec.split.validation_fraction, spec.split.seed)

    started = time.monotonic()
    if spec.tokenizer.from_uri is not None:
        source = imported_tokenizer.resolve(spec.tokenizer.from_uri, base_dir)
        trained = imported_tokenizer.load(spec.tokenizer, imported_tokenizer.fetch(source, work))
    else:
        sample = _sample_mask(hashes, sizes, keep & ~validation, spec.tokenizer.train_sample_bytes)
        trained = tokenizer.train(spec.tokenizer, (text for _, text in _select(readers, sample)))
    stats.seconds["tokenizer"] = time.monotonic() - started

    previous = _previous_manifest(output)
    storage.delete(storage.join(output, MANIFEST))  # from here on the old shards are being replaced
    trained.save(work / "tokenizer")
    for name in trained.files():
        storage.upload_file(work / "tokenizer" / name, storage.join(output, "tokenizer", name))
    writers = _write_shards(spec, output, readers, keep, validation, trained, stats, work)
    manifest = _manifest(resource, trained, writers, stats)
    if spec.tokenizer.from_uri is not None:
        manifest["tokenizer"]["from"] = spec.tokenizer.from_uri
    pause_point("ingest-manifest")  # shards written, the manifest not yet
    if lock is not None:
        lock.check()
    storage.write_bytes(storage.join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
    _remove_stale(output, previous, manifest)
    return manifest


def _deduplicate(spec: DataSourceSpec, readers: list[parts.PartReader], hashes: np.ndarray, stats: Stats) -> np.ndarray:
    """The mask of documents kept after exact and near-duplicate removal."""
    started = time.monotonic()
    keep = first_occurrences(hashes) if spec.dedup.exact else np.ones(len(hashes), dtype=bool)
    stats.duplicates_exact = int(len(hashes) - keep.sum())
    minhash = spec.dedup.minhash
    if minhash.enabled and len(hashes):
        signatures = np.concatenate([r.signatures for r in readers if len(r.hashes)])  # an empty part adds none
        store = parts.ShingleStore(readers)
        near = near_duplicates(signatures, hashes[:, 0], minhash.bands, minhash.threshold, keep, store.similarity)
        keep &= ~near
        stats.duplicates_near = int(near.sum())
    stats.seconds["dedup"] = time.monotonic() - started
    stats.documents_out = int(keep.sum())
    if not stats.documents_out:
        rejected = ", ".join(f"{k}: {v}" for k, v in sorted(stats.rejected.items())) or "none"
        raise EmptyCorpus(
            f"no documents survived ({stats.documents_in} read; rejected: {rejected}); check spec.sources,"
            " spec.format, spec.textField and spec.validation"
        )
    return keep


def _write_shards(
    spec: DataSourceSpec,
    output: str,
    readers: list[parts.PartReader],
    keep: np.ndarray,
    validation: np.ndarray,
    trained: tokenizer.Tokenizer,
    stats: Stats,
    work: Path,
) -> dict[str, ShardWriter]:
    """Encode the kept documents in batches (the next batch is read while one encodes) into shards."""
    started = time.monotonic()
    dtype = token_dtype(trained.vocab_size)
    eos = [trained.special_ids()["eos"]]
    writers = {
        split: ShardWriter(split, output, dtype, spec.output.shard_tokens, work / "staging")
        for split in ("train", "validation")
    }
    progress = logs.Progress("tokenize", total=stats.documents_out)
    for batch in _batches(_prefetch(_select(readers, keep), PREFETCH_DOCUMENTS), ENCODE_BATCH_BYTES):
        encoded = trained.encode_batch([text for _, text in batch])
        for split, selected in (("validation", True), ("train", False)):
            rows = [ids for (index, _), ids in zip(batch, encoded, strict=True) if validation[index] == selected]
            if rows:
                flat = np.fromiter(
                    itertools.chain.from_iterable(itertools.chain(ids, eos) for ids in rows),
                    dtype=dtype,
                    count=sum(len(ids) + 1 for ids in rows),
                )
                writers[split].add(flat, documents=len(rows))
        progress.advance(len(batch))
    progress.close()
    for writer in writers.values():
        writer.close()
    stats.tokens_train, stats.tokens_validation = writers["train"].tokens, writers["validation"].tokens
    stats.documents_train, stats.documents_validation = writers["train"].documents, writers["validation"].documents
    stats.seconds["tokenize"] = time.monotonic() - started
    if not stats.tokens_train:
        raise EmptyCorpus("every kept document went to validation; lower spec.split.validationFraction")
    return writers


def _manifest(
    resource: DataSource, trained: tokenizer.Tokenizer, writers: dict[str, ShardWriter], stats: Stats
) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "kind": "llmtrain.dev/dataset",
        "name": resource.name,
        "specHash": spec_hash(resource.spec),
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dtype": token_dtype(trained.vocab_size).name,
        "tokenizer": {
            "type": trained.kind,
            "vocabSize": trained.vocab_size,
            "path": "tokenizer",
            "files": trained.files(),
            "specialTokens": {
                name: {"token": trained.special[name], "id": i} for name, i in trained.special_ids().items()
            },
        },
        "eosId": trained.special_ids()["eos"],
        "splits": {
            split: {
                "documents": writer.documents,
                "tokens": writer.tokens,
                "shards": [s.to_json() for s in writer.shards],
            }
            for split, writer in writers.items()
        },
        "stats": stats.to_json(),
    }


def _previous_manifest(output: str) -> dict[str, Any]:
    """The manifest being replaced ({} when there is none or it is unreadable): what may be deleted."""
    try:
        previous = read_manifest(output)
    except ValueError:
        return {}
    return previous if isinstance(previous, dict) else {}


def _written_files(manifest: dict[str, Any]) -> set[str]:
    """The shard and tokenizer paths a manifest lists, as ingest names them (anything else is ignored)."""
    paths: set[str] = set()
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        for split in manifest.get("splits", {}).values():
            paths |= {s["path"] for s in split["shards"] if isinstance(s.get("path"), str)}
    with contextlib.suppress(AttributeError, KeyError, TypeError):
        files = manifest.get("tokenizer", {}).get("files", [])
        paths |= {f"tokenizer/{n}" for n in files if isinstance(n, str) and _TOKENIZER_FILE.fullmatch(n)}
    return {p for p in paths if SHARD_PATH.fullmatch(p) or p.startswith("tokenizer/")}


def _remove_stale(output: str, previous: dict[str, Any], manifest: dict[str, Any]) -> None:
    """After the manifest is in place: drop the scan parts, and the files the previous manifest listed
    that the new one does not. Nothing else is deleted, and nothing through a symbolic link."""
    for path in sorted(_written_files(previous) - _written_files(manifest)):
        if storage.is_s3(output) or _is_plain_file_below(storage.local_path(output), path):
            storage.delete(storage.join(output, path))
    work = storage.join(output, ".work")
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


def _refuse_linked_output(output: str) -> None:
    """A local output's own entries must not be links: ingest would write and delete through them."""
    if storage.is_s3(output):
        return
    root = storage.local_path(output)
    for name in OUTPUT_ENTRIES:
        if (root / name).is_symlink():
            raise LinkedOutput(
                f"{root / name} is a symbolic link; ingest writes and deletes its own files below {root} only:"
                " remove the link or choose another output (spec.output.uri or --output)"
            )


def _current_manifest(output: str, spec: DataSourceSpec) -> dict[str, Any] | None:
    """The manifest in place when it was written for this very spec."""
    existing = read_manifest(output)
    return existing if existing and existing.get("specHash") == spec_hash(spec) else None


def _skipped(resource: DataSource, output: str, existing: dict[str, Any]) -> dict[str, Any]:
    logs.audit("IngestSkipped", resource=resource.name, reason="manifest with this spec hash exists")
    return {"name": resource.name, "output": output, "skipped": True, "stats": existing["stats"]}


def read_manifest(output: str) -> dict[str, Any] | None:
    uri = storage.join(output, MANIFEST)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_bytes(uri))


def ingest(
    resource: DataSource,
    output: str,
    base_dir: Path,
    workers: int = 1,
    shard_index: int | None = None,
    shard_count: int | None = None,
    merge_only: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run the whole ingest, one scan part, or the merge; returns the report printed on stdout."""
    started = time.monotonic()
    spec = resource.spec
    if not force and shard_index is None and (existing := _current_manifest(output, spec)):
        return _skipped(resource, output, existing)
    _refuse_linked_output(output)
    logs.audit("IngestStarted", resource=resource.name, output=output)
    if shard_index is not None:
        uri = scan(resource, output, base_dir, 1, shard_index, shard_count)[shard_index]
        record = json.loads(storage.read_bytes(storage.join(uri, "stats.json")))
        return {"name": resource.name, "part": uri, "stats": record}
    with locking.held(output) as lock:
        if not force and (existing := _current_manifest(output, spec)):  # a writer just before us did it
            return _skipped(resource, output, existing)
        count = shard_count or workers
        uris = (
            [parts.part_uri(output, i, count) for i in range(count)]
            if merge_only
            else scan(resource, output, base_dir, workers, None, count)
        )
        stats = Stats()
        manifest = merge(resource, output, uris, stats, lock, base_dir)
    stats.seconds["total"] = time.monotonic() - started
    report = {
        "name": resource.name,
        "output": output,
        "manifest": storage.join(output, MANIFEST),
        "tokenizer": storage.join(output, "tokenizer"),
        "stats": manifest["stats"],
    }
    logs.audit("IngestFinished", resource=resource.name, documents=stats.documents_out, tokens=stats.tokens_train)
    return report

"""The scan stage: read part `i` of `n` (a contiguous run of units: whole inputs, record-aligned byte
ranges or parquet row groups of large ones, `units.py`), decode, repair, normalize, filter and hash each
document, and publish the part (`parts.py`); a part may be empty. A finished part (DONE, stats with the
same spec hash) is not scanned again. Memory is bounded: a reader thread fills a bounded queue, and the
part streams to local disk."""

from __future__ import annotations

import json
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from .. import logs, storage
from ..api.datasource import DataSource, DataSourceSpec
from ..errors import MaybeRetryable, Retryable
from . import parts, units
from .dedup.exact import content_hash
from .dedup.minhash import MinHasher
from .formats import InputError, Raw, Rejected
from .layout import EmptyCorpus, spec_hash
from .normalize import Normalizer
from .sources import list_inputs, read_input
from .stats import Stats
from .validate import Filter, decode

log = logging.getLogger("llmtrain.ingest")

PREFETCH_DOCUMENTS = 256
#: the rejection reason of a document that made a cleaning stage raise
MALFORMED = "malformed"


def band_layout(spec: DataSourceSpec) -> parts.BandLayout:
    minhash = spec.dedup.minhash
    return parts.BandLayout(minhash.bands if minhash.enabled else 0, spec.dedup.exact)


def prefetch(items: Iterator[Any], size: int) -> Iterator[Any]:
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
        if self.hasher is not None:
            self.hasher.signature_and_shingles("load the kernel")  # once per process, before any document
        self._logged: set[str] = set()
        self.signature_seconds = 0.0  # CPU on MinHash signatures and shingles (the dedup benchmark's share)

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
        started = time.thread_time()  # CPU time: the reader thread's turns on the GIL are not counted
        signature, shingles = self.hasher.signature_and_shingles(text) if self.hasher else (None, None)
        self.signature_seconds += time.thread_time() - started
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
        writer = parts.PartWriter(Path(staging), band_layout(spec), spec.dedup.minhash.num_perm)
        progress = logs.Progress(f"scan {uri.rsplit('/', 1)[-1]}")
        for name, item in prefetch(_documents(spec, work, stats), PREFETCH_DOCUMENTS):
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
        record = {
            **stats.scan_json(),
            "specHash": spec_hash(spec),
            "signatureSeconds": round(clean.signature_seconds, 3),
        }
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

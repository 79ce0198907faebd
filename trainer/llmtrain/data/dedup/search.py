"""The dedup stage: duplicate candidates found band by band, key range by key range, across all parts.

The work is a list of **units**, each one band and a group of its key ranges (`parts.RANGES` per band);
task `i` of `n` takes units `i, i+n, ...`. A unit reads that band's records in those ranges from every
part (a contiguous slice of each part's `bands.bin`), sorts them by key and global document index, and
pairs each bucket's members with its head (the member with the smallest index, as `lsh.candidate_pairs`
does in one process). Near bands' pairs are then verified by their **exact** Jaccard similarity from the
parts' shingle hashes; the exact band's buckets are documents with the same 128-bit content hash, which
need no check (and near bands skip pairs of such twins when exact dedup is on).

Memory follows the unit, never the corpus: a unit holds about `UNIT_RECORDS` records, so the number of
key-range groups per band grows with the corpus. Verified pairs go to `<output>/.work/dedup-i-of-n/`
with the content hash of each end (the cluster stage keeps the smallest).
"""

from __future__ import annotations

import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import storage
from ..parts import RANGES, RECORD, BandLayout, PartSet

log = logging.getLogger("llmtrain.ingest")

#: records (about 20 bytes each) one unit sorts at once
UNIT_RECORDS = 4_000_000
#: ranged GETs in flight while a unit reads its candidates' shingles from S3
FETCH_THREADS = 32
#: candidate pairs verified at once (their documents' shingles held, at most twice as many documents)
VERIFY_PAIRS = 512
PAIR = np.dtype([("a", "<i8"), ("b", "<i8"), ("order_a", "<u8"), ("order_b", "<u8"), ("exact", "?")])


@dataclass(frozen=True)
class Unit:
    band: int
    first_range: int
    last_range: int  # exclusive


def units(layout: BandLayout, documents: int) -> list[Unit]:
    """Every band cut into groups of key ranges of about `UNIT_RECORDS` records each."""
    groups = min(RANGES, max(1, -(-documents // UNIT_RECORDS)))
    return [
        Unit(band, group * RANGES // groups, (group + 1) * RANGES // groups)
        for band in range(layout.count)
        for group in range(groups)
    ]


def task_units(layout: BandLayout, documents: int, index: int, count: int) -> list[Unit]:
    return units(layout, documents)[index::count]


@dataclass
class Found:
    pairs: np.ndarray  # PAIR records
    candidates: int


class Search:
    """Finds and verifies the duplicate pairs of units over a set of finished parts."""

    def __init__(self, part_set: PartSet, layout: BandLayout, threshold: float) -> None:
        self.parts, self.layout, self.threshold = part_set, layout, threshold
        self.files = [part_set.files(i) for i in range(len(part_set.uris))]
        self.starts = part_set.starts
        self._shingles: dict[int, np.ndarray] = {}

    def run(self, work: list[Unit]) -> Found:
        found = [self.unit(unit) for unit in work]
        pairs = np.concatenate([f.pairs for f in found]) if found else np.zeros(0, PAIR)
        return Found(pairs, sum(f.candidates for f in found))

    def unit(self, unit: Unit) -> Found:
        exact = self.layout.exact and unit.band == self.layout.exact_band
        records, ids = self._records(unit)
        heads, members = _bucket_pairs(records, exact)
        if exact:
            pairs = _pairs(ids, records, heads, members, exact=True, order=records["key"])
            return Found(pairs, len(pairs))
        if self.layout.exact:  # exact twins are paired by the exact band
            distinct = records["check"][heads] != records["check"][members]
            heads, members = heads[distinct], members[distinct]
        candidates = _pairs(ids, records, heads, members, exact=False, order=records["check"])
        return Found(candidates[self._verified(candidates)], len(candidates))

    def _records(self, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
        """The unit's records from every part, sorted, and their global document indices."""
        pieces, ids = [], []
        for part, files in enumerate(self.files):
            records = files.band_range(unit.band, unit.first_range, unit.last_range)
            pieces.append(records)
            ids.append(records["id"].astype(np.int64) + self.starts[part])
        records = np.concatenate(pieces) if pieces else np.zeros(0, RECORD)
        global_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        exact = self.layout.exact and unit.band == self.layout.exact_band
        order = (
            np.lexsort((global_ids, records["check"], records["key"]))
            if exact
            else np.lexsort((global_ids, records["key"]))
        )
        return records[order], global_ids[order]

    def _verified(self, pairs: np.ndarray) -> np.ndarray:
        """Mask of the pairs whose exact Jaccard similarity reaches the threshold, `VERIFY_PAIRS` pairs at
        a time: only their documents' shingles are held (pairs come grouped by head)."""
        keep = np.zeros(len(pairs), dtype=bool)
        for start in range(0, len(pairs), VERIFY_PAIRS):
            chunk = pairs[start : start + VERIFY_PAIRS]
            self._shingles.clear()
            self._fetch_shingles(np.unique(np.concatenate([chunk["a"], chunk["b"]])))
            for i, (a, b) in enumerate(zip(chunk["a"].tolist(), chunk["b"].tolist(), strict=True), start):
                keep[i] = sorted_jaccard(self._shingles_of(a), self._shingles_of(b)) >= self.threshold
        self._shingles.clear()
        return keep

    def _fetch_shingles(self, documents: np.ndarray) -> None:
        """On S3, the documents' shingles with `FETCH_THREADS` ranged GETs in flight (each is a round
        trip); local parts are read on demand (`pread`)."""
        if not documents.size or not any(storage.is_s3(f.uri) for f in self.files):
            return
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            for document, shingles in zip(
                documents.tolist(), pool.map(self._read_shingles, documents.tolist()), strict=True
            ):
                self._shingles[document] = shingles

    def _read_shingles(self, document: int) -> np.ndarray:
        part = int(np.searchsorted(self.starts, document, side="right") - 1)
        return self.files[part].shingles(document - int(self.starts[part]))

    def _shingles_of(self, document: int) -> np.ndarray:
        if document not in self._shingles:
            self._shingles[document] = self._read_shingles(document)
        return self._shingles[document]


def _bucket_pairs(records: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """(head, member) positions: every record whose key (and check, for exact) equals its predecessor's
    is a member of the bucket whose first record is its head."""
    if len(records) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    same = records["key"][1:] == records["key"][:-1]
    if exact:
        same &= records["check"][1:] == records["check"][:-1]
    new_bucket = np.concatenate(([True], ~same))
    head_of = np.flatnonzero(new_bucket)[np.cumsum(new_bucket) - 1]
    members = np.flatnonzero(~new_bucket)
    return head_of[members], members


def _pairs(
    ids: np.ndarray, records: np.ndarray, heads: np.ndarray, members: np.ndarray, exact: bool, order: np.ndarray
) -> np.ndarray:
    pairs = np.empty(len(heads), PAIR)
    pairs["a"], pairs["b"] = ids[heads], ids[members]
    pairs["order_a"], pairs["order_b"] = order[heads], order[members]
    pairs["exact"] = exact
    return pairs


def sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct shingle hashes (1.0 for two empty ones)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def run_task(output: str, part_set: PartSet, layout: BandLayout, threshold: float, index: int, count: int) -> dict:
    """Search units `index::count` and publish the verified pairs to the task's work folder."""
    from ..layout import task_uri

    started = time.monotonic()
    work = task_units(layout, part_set.total, index, count)
    found = Search(part_set, layout, threshold).run(work)
    uri = task_uri(output, "dedup", index, count)
    with tempfile.TemporaryDirectory(prefix="llmtrain-dedup-") as staging:
        path = Path(staging) / "pairs.npy"
        np.save(path, found.pairs)
        storage.upload_file(path, storage.join(uri, "pairs.npy"), move=True)
    facts = {
        "units": len(work),
        "candidatePairs": found.candidates,
        "verifiedPairs": len(found.pairs),
        "seconds": round(time.monotonic() - started, 3),
    }
    log.info("dedup task done", extra={"task": uri, **facts})
    return facts

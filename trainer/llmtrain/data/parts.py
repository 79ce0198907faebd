"""A scan part: the cleaned documents of one worker's units, with their hashes and LSH band records.

Layout under `<output>/.work/part-<i>-of-<n>/` (flat little-endian arrays, so that later stages read
only the pieces they need: memory-mapped on a local or PVC path, ranged reads on S3):
- `docs.zst`: records of a 4-byte length and UTF-8 text, zstd-compressed in independent frames of about
  `FRAME_BYTES` (streamed whole by encode), and `frames.bin` (int64 pairs: each frame's byte offset and
  first document, then the file's size and document count), so that the tokenizer's sample reads only
  the frames holding sampled documents;
- `hashes.bin` (uint64 x 2 per document: BLAKE2b-128 content hash), `sizes.bin` (int64 bytes);
- `shingles.bin`: each document's distinct shingle hashes, sorted (uint32), and `offsets.bin` (int64,
  documents + 1) where each document's run starts: exact verification of near-duplicate candidates;
- `bands.bin`: per band, one `RECORD` per document sorted by key (band `b` at record `b * documents`),
  and `band_offsets.bin` (int64, bands x (RANGES + 1)): where each of the `RANGES` key ranges (the top
  bits of the key) begins, so that a dedup task reads one band's key range from every part;
- `stats.json`, and `DONE` (the document count), written last: a part without `DONE` is scanned again.

Bands: the MinHash bands (`dedup/lsh.band_keys`), then, with exact dedup, one more "band" whose key and
check are the two halves of the content hash. A near band's record checks with the content hash's first
half (which member of a cluster is kept, and which candidates are exact twins).

Memory does not follow the part's size: documents, shingles and hashes stream to disk, and band records
are spilled in sorted runs of `RUN_DOCUMENTS` and merged one key-range group at a time.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from .. import storage
from ..pausepoints import pause_point
from .dedup.lsh import band_keys
from .stats import Stats

_LENGTH = struct.Struct("<I")
RECORD = np.dtype([("key", "<u8"), ("check", "<u8"), ("id", "<u4")])
#: key ranges per band: a record's range is the top `RANGE_BITS` bits of its key
RANGE_BITS = 10
RANGES = 1 << RANGE_BITS
#: documents whose signatures are held (in one preallocated array) before their band records are
#: spilled, sorted, to disk: 16,384 x 112 permutations x 4 bytes = 7 MiB
RUN_DOCUMENTS = 16384
#: records sorted at once when the spilled runs are merged
MERGE_RECORDS = 1 << 20
#: uncompressed bytes of documents per zstd frame of `docs.zst` (the unit a sparse reader fetches)
FRAME_BYTES = 1 << 20
FILES = (
    "docs.zst",
    "frames.bin",
    "hashes.bin",
    "sizes.bin",
    "shingles.bin",
    "offsets.bin",
    "bands.bin",
    "band_offsets.bin",
    "stats.json",
)


@dataclass(frozen=True)
class BandLayout:
    """The bands a part writes: `near` MinHash bands (0..near-1), then the exact band when `exact`."""

    near: int
    exact: bool

    @property
    def count(self) -> int:
        return self.near + int(self.exact)

    @property
    def exact_band(self) -> int:
        return self.near


def part_uri(output: str, index: int, count: int) -> str:
    return storage.join(output, ".work", f"part-{index:05d}-of-{count:05d}")


def key_range(keys: np.ndarray) -> np.ndarray:
    return (keys >> np.uint64(64 - RANGE_BITS)).astype(np.int64)


def sort_records(records: np.ndarray, exact: bool) -> np.ndarray:
    """By key (and check, for the exact band), then id."""
    order = (
        np.lexsort((records["id"], records["check"], records["key"]))
        if exact
        else np.lexsort((records["id"], records["key"]))
    )
    return records[order]


class _BandSpill:
    """Band records in sorted runs on local disk, merged into `bands.bin` one key-range group at a time."""

    def __init__(self, staging: Path, layout: BandLayout, num_perm: int) -> None:
        self.staging, self.layout = staging, layout
        self.runs: list[tuple[Path, np.ndarray]] = []  # (file, per band: RANGES + 1 record offsets)
        self.signatures = np.zeros((RUN_DOCUMENTS, num_perm if layout.near else 0), dtype=np.uint32)
        self.hashes = np.zeros((RUN_DOCUMENTS, 2), dtype=np.uint64)
        self.filled = 0
        self.first_id = 0
        self.seconds = 0.0  # spent on runs (merging is timed by the writer)

    def add(self, signature: np.ndarray | None, content_hash: tuple[int, int]) -> None:
        if not self.layout.count:  # no dedup: no bands
            return
        if self.layout.near:
            self.signatures[self.filled] = signature
        self.hashes[self.filled] = content_hash
        self.filled += 1
        if self.filled == RUN_DOCUMENTS:
            self.flush()

    def _band_records(self) -> Iterator[np.ndarray]:
        """This run's records, one band at a time, sorted."""
        count = self.filled
        hashes = self.hashes[:count]
        ids = np.arange(self.first_id, self.first_id + count, dtype=np.uint32)
        if self.layout.near:
            keys = band_keys(self.signatures[:count], self.layout.near)
            for band in range(self.layout.near):
                records = np.empty(count, RECORD)
                records["key"], records["check"], records["id"] = keys[:, band], hashes[:, 0], ids
                yield sort_records(records, exact=False)
        if self.layout.exact:
            records = np.empty(count, RECORD)
            records["key"], records["check"], records["id"] = hashes[:, 0], hashes[:, 1], ids
            yield sort_records(records, exact=True)

    def flush(self) -> None:
        if not self.filled:
            return
        started = time.perf_counter()
        path = self.staging / f"run-{len(self.runs):06d}.tmp"
        offsets = np.zeros((self.layout.count, RANGES + 1), dtype=np.int64)
        with path.open("wb") as handle:
            for band, records in enumerate(self._band_records()):
                offsets[band] = np.searchsorted(key_range(records["key"]), np.arange(RANGES + 1))
                handle.write(records.tobytes())
        self.runs.append((path, offsets))
        self.seconds += time.perf_counter() - started
        self.first_id += self.filled
        self.filled = 0

    def merge(self, bands_path: Path, offsets_path: Path) -> None:
        """Every band's records in key order into `bands_path`; the key ranges' starts into `offsets_path`."""
        self.flush()
        total = self.first_id
        runs = [(np.memmap(path, dtype=RECORD, mode="r"), offsets) for path, offsets in self.runs]
        band_offsets = np.zeros((self.layout.count, RANGES + 1), dtype=np.int64)
        with bands_path.open("wb") as out:
            for band in range(self.layout.count):
                exact = self.layout.exact and band == self.layout.exact_band
                band_offsets[band] = band * total + self._merge_band(out, runs, band, total, exact)
        band_offsets.tofile(offsets_path)
        for path, _ in self.runs:
            path.unlink()

    def _merge_band(self, out: Any, runs: list, band: int, total: int, exact: bool) -> np.ndarray:
        """Writes one band, a group of key ranges at a time; returns its range starts (records)."""
        groups = max(1, -(-total // MERGE_RECORDS))
        starts = np.zeros(RANGES + 1, dtype=np.int64)
        written = 0
        for group in range(groups):
            first, last = group * RANGES // groups, (group + 1) * RANGES // groups
            pieces = []
            for records, offsets in runs:
                base = band * int(offsets[0, RANGES])  # a run holds its documents' records band after band
                pieces.append(records[base + offsets[band, first] : base + offsets[band, last]])
            merged = sort_records(np.concatenate(pieces), exact) if pieces else np.zeros(0, RECORD)
            starts[first:last] = written + np.searchsorted(key_range(merged["key"]), np.arange(first, last))
            out.write(merged.tobytes())
            written += len(merged)
        starts[RANGES] = written
        return starts


class PartWriter:
    """Writes one part into a local staging directory; `publish` puts it in place, DONE last."""

    def __init__(self, staging: Path, layout: BandLayout, num_perm: int = 0) -> None:
        """`num_perm`: the MinHash signatures' width (with near bands)."""

        self.staging = staging
        staging.mkdir(parents=True, exist_ok=True)
        self._file = (staging / "docs.zst").open("wb")
        self._stream = zstandard.ZstdCompressor(level=1).stream_writer(self._file)
        self._shingles = (staging / "shingles.bin").open("wb")
        self._offsets = (staging / "offsets.bin").open("wb")
        self._hashes = (staging / "hashes.bin").open("wb")
        self._sizes = (staging / "sizes.bin").open("wb")
        self._bands = _BandSpill(staging, layout, num_perm)
        self._shingle_end = 0
        self._offsets.write(np.int64(0).tobytes())
        self.documents = 0
        self._frames = [(0, 0)]  # (byte offset in docs.zst, first document) of each frame
        self._frame_bytes = 0

    def add(
        self,
        text: str,
        content_hash: tuple[int, int],
        signature: np.ndarray | None = None,
        shingles: np.ndarray | None = None,
    ) -> None:
        data = text.encode("utf-8")
        if shingles is not None:  # distinct and sorted (`MinHasher.signature_and_shingles`)
            self._shingles.write(shingles.astype(np.uint32, copy=False).tobytes())
            self._shingle_end += len(shingles)
        self._offsets.write(np.int64(self._shingle_end).tobytes())
        if self._frame_bytes >= FRAME_BYTES:  # this document starts a new frame
            self._stream.flush(zstandard.FLUSH_FRAME)
            self._frames.append((self._file.tell(), self.documents))
            self._frame_bytes = 0
        self._stream.write(_LENGTH.pack(len(data)))
        self._stream.write(data)
        self._frame_bytes += _LENGTH.size + len(data)
        self._hashes.write(np.array(content_hash, dtype=np.uint64).tobytes())
        self._sizes.write(np.int64(len(data)).tobytes())
        self._bands.add(signature, content_hash)
        self.documents += 1

    def publish(self, uri: str, stats: dict[str, Any]) -> None:
        self._stream.close()
        frames = [*self._frames, ((self.staging / "docs.zst").stat().st_size, self.documents)]
        np.array(frames, dtype=np.int64).tofile(self.staging / "frames.bin")
        for handle in (self._shingles, self._offsets, self._hashes, self._sizes):
            handle.close()
        started, spilled = time.perf_counter(), self._bands.seconds
        self._bands.merge(self.staging / "bands.bin", self.staging / "band_offsets.bin")
        band_seconds = spilled + time.perf_counter() - started
        (self.staging / "stats.json").write_text(json.dumps({**stats, "bandSeconds": round(band_seconds, 3)}))
        for name in FILES:
            storage.upload_file(self.staging / name, storage.join(uri, name), move=True)
        pause_point("ingest-part")  # the part's files in place, its DONE not yet
        storage.write_bytes(storage.join(uri, "DONE"), json.dumps({"documents": self.documents}).encode())


def is_done(uri: str) -> bool:
    return storage.exists(storage.join(uri, "DONE"))


def document_count(uri: str, client: Any = None) -> int:
    """The documents a finished part holds (from its DONE)."""
    count = json.loads(storage.read_bytes(storage.join(uri, "DONE"), client)).get("documents")
    if not isinstance(count, int) or count < 0:
        raise storage.StorageError(f"{uri}/DONE: no document count; rerun the scan", retryable=False)
    return count


class PartFiles:
    """Random access to a finished part's arrays: `pread` on a local path (no memory map, so the pages
    read are not held in the reader's memory), ranged reads on S3."""

    def __init__(self, uri: str, documents: int, client: Any = None) -> None:
        """`client`: the S3 client to read with (one is made when None); thread-safe once made."""
        self.uri, self.documents = uri, documents
        self._client = client if client is not None or not storage.is_s3(uri) else storage.s3_client()
        self._files: dict[str, int] = {}

    def slice(self, name: str, dtype: np.dtype | type, start: int, stop: int) -> np.ndarray:
        """Items `start..stop` of the array in file `name`."""
        dtype = np.dtype(dtype)
        if stop <= start:
            return np.zeros(0, dtype)
        offset, length = start * dtype.itemsize, (stop - start) * dtype.itemsize
        if storage.is_s3(self.uri):
            data = storage.read_range(storage.join(self.uri, name), offset, length, self._client)
        else:
            data = os.pread(self._descriptor(name), length, offset)
        if len(data) != length:
            raise storage.StorageError(f"{self.uri}/{name}: shorter than its index says; rerun the scan")
        return np.frombuffer(data, dtype=dtype)

    def _descriptor(self, name: str) -> int:
        if name not in self._files:
            path = storage.local_path(storage.join(self.uri, name))
            try:
                self._files[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise storage.StorageError(f"{path}: {exc.strerror}; rerun the scan") from exc
        return self._files[name]

    def close(self) -> None:
        for descriptor in self._files.values():
            os.close(descriptor)
        self._files.clear()

    def __del__(self) -> None:
        self.close()

    def band_range(self, band: int, first: int, last: int) -> np.ndarray:
        """The band's records whose key range is in `first..last-1`, in key order."""
        edges = self.slice("band_offsets.bin", np.int64, band * (RANGES + 1) + first, band * (RANGES + 1) + last + 1)
        return self.slice("bands.bin", RECORD, int(edges[0]), int(edges[-1]))

    def shingles(self, local: int) -> np.ndarray:
        start, stop = self.slice("offsets.bin", np.int64, local, local + 2)
        return self.slice("shingles.bin", np.uint32, int(start), int(stop))

    def hashes(self) -> np.ndarray:
        return self.slice("hashes.bin", np.uint64, 0, 2 * self.documents).reshape(-1, 2)

    def sizes(self) -> np.ndarray:
        return self.slice("sizes.bin", np.int64, 0, self.documents)

    def stats(self) -> dict[str, Any]:
        return json.loads(storage.read_bytes(storage.join(self.uri, "stats.json"), self._client))

    def documents_text(self) -> Iterator[str]:
        """The part's documents in order, streamed."""

        with storage.open_read(storage.join(self.uri, "docs.zst"), self._client) as handle:
            reader = zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True)
            while header := _read_exact(reader, _LENGTH.size):
                (length,) = _LENGTH.unpack(header)
                yield _read_exact(reader, length).decode("utf-8")

    def documents_at(self, wanted: np.ndarray) -> Iterator[tuple[int, str]]:
        """(local index, text) of the documents `wanted` (sorted local indices), reading only the frames
        that hold them (one ranged read each on S3)."""
        if not len(wanted):
            return
        frames = np.frombuffer(storage.read_bytes(storage.join(self.uri, "frames.bin"), self._client), np.int64)
        frames = frames.reshape(-1, 2)
        holding = np.searchsorted(frames[:, 1], wanted, side="right") - 1
        for frame in np.unique(holding).tolist():
            (start, first), (stop, _) = frames[frame], frames[frame + 1]
            data = (
                zstandard.ZstdDecompressor()
                .decompressobj()
                .decompress(self.slice("docs.zst", np.uint8, int(start), int(stop)).tobytes())
            )
            chosen = set(wanted[holding == frame].tolist())
            position, document = 0, int(first)
            while position < len(data) and chosen:
                (length,) = _LENGTH.unpack_from(data, position)
                if document in chosen:
                    chosen.discard(document)
                    yield document, data[position + _LENGTH.size : position + _LENGTH.size + length].decode("utf-8")
                position += _LENGTH.size + length
                document += 1


def _read_exact(reader: Any, size: int) -> bytes:
    """`size` bytes (a decompressing reader may return fewer per call); b"" at the end."""
    chunks, missing = [], size
    while missing:
        chunk = reader.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    data = b"".join(chunks)
    if data and len(data) != size:
        raise OSError("truncated part file: rerun the scan")
    return data


@dataclass(frozen=True)
class PartSet:
    """The `count` finished parts of an output, with where each one's documents start globally, and
    the one S3 client they are read with (None for a local output)."""

    uris: list[str]
    counts: list[int]
    client: Any = None

    @classmethod
    def load(cls, output: str, count: int) -> PartSet:
        client = storage.s3_client() if storage.is_s3(output) else None
        uris = [part_uri(output, i, count) for i in range(count)]
        for uri in uris:
            if not storage.exists(storage.join(uri, "DONE"), client):
                raise storage.StorageError(f"{uri}: part not finished; scan it first", retryable=True)
        return cls(uris, [document_count(uri, client) for uri in uris], client)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.counts))).astype(np.int64)

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    def files(self, index: int) -> PartFiles:
        return PartFiles(self.uris[index], self.counts[index], self.client)

    def scan_stats(self) -> Stats:
        """The parts' scan counts, summed."""
        stats = Stats()
        for index in range(len(self.uris)):
            stats.add(Stats.from_json(self.files(index).stats()))
        return stats

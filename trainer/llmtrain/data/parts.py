"""A scan part: the cleaned documents of one worker's inputs, with their hashes and signatures.

Layout under `<output>/.work/part-<i>-of-<n>/`: `docs.zst` (records of a 4-byte length and UTF-8
text, zstd-compressed), `shingles.bin` (each document's shingle hashes, uint32, for
exact verification of near-duplicate candidates), `index.npz` (content hashes, sizes, MinHash
signatures, shingle offsets), `stats.json`, and `DONE`, written last: a part without `DONE` is
incomplete and is scanned again.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage

_LENGTH = struct.Struct("<I")
FILES = ("docs.zst", "shingles.bin", "index.npz", "stats.json")


def part_uri(output: str, index: int, count: int) -> str:
    return storage.join(output, ".work", f"part-{index:05d}-of-{count:05d}")


class PartWriter:
    """Writes one part into a local staging directory; `publish` puts it in place, DONE last."""

    def __init__(self, staging: Path, signature_width: int = 0) -> None:
        """`signature_width`: MinHash permutations per signature (0 without MinHash), so that an empty
        part's signatures have the same width as every other part's."""
        import zstandard

        self.staging = staging
        self.signature_width = signature_width
        staging.mkdir(parents=True, exist_ok=True)
        self._file = (staging / "docs.zst").open("wb")
        self._stream = zstandard.ZstdCompressor(level=1).stream_writer(self._file)
        self._shingles = (staging / "shingles.bin").open("wb")
        self.shingle_offsets = [0]
        self.hashes: list[tuple[int, int]] = []
        self.sizes: list[int] = []
        self.signatures: list[np.ndarray] = []

    def add(
        self,
        text: str,
        content_hash: tuple[int, int],
        signature: np.ndarray | None = None,
        shingles: np.ndarray | None = None,
    ) -> None:
        data = text.encode("utf-8")
        if shingles is not None:
            self._shingles.write(shingles.astype(np.uint32).tobytes())
        self.shingle_offsets.append(self.shingle_offsets[-1] + (0 if shingles is None else len(shingles)))
        self._stream.write(_LENGTH.pack(len(data)))
        self._stream.write(data)
        self.hashes.append(content_hash)
        self.sizes.append(len(data))
        if signature is not None:
            self.signatures.append(signature)

    def publish(self, uri: str, stats: dict[str, Any]) -> None:
        self._stream.close()
        self._shingles.close()
        hashes = np.array(self.hashes, dtype=np.uint64).reshape(-1, 2)
        signatures = (
            np.stack(self.signatures)
            if self.signatures
            else np.zeros((len(self.hashes), self.signature_width), dtype=np.uint32)
        )
        np.savez(
            self.staging / "index.npz",
            hashes=hashes,
            sizes=np.array(self.sizes, dtype=np.int64),
            signatures=signatures,
            shingle_offsets=np.array(self.shingle_offsets, dtype=np.int64),
        )
        (self.staging / "stats.json").write_text(json.dumps(stats))
        for name in FILES:
            storage.upload_file(self.staging / name, storage.join(uri, name), move=True)
        storage.write_bytes(storage.join(uri, "DONE"), json.dumps({"documents": len(self.hashes)}).encode())


def is_done(uri: str) -> bool:
    return storage.exists(storage.join(uri, "DONE"))


class PartReader:
    """A finished part: index arrays in memory, documents streamed from disk."""

    def __init__(self, uri: str, workdir: Path) -> None:
        self.uri = uri
        if storage.is_s3(uri):
            self.directory = storage.download_tree(uri, Path(tempfile.mkdtemp(dir=workdir)))
        else:
            self.directory = storage.local_path(uri)
        with np.load(self.directory / "index.npz") as index:
            self.hashes = index["hashes"]
            self.sizes = index["sizes"]
            self.signatures = index["signatures"]
            self.shingle_offsets = index["shingle_offsets"]
        path = self.directory / "shingles.bin"
        self.shingles = np.memmap(path, dtype=np.uint32, mode="r") if path.stat().st_size else np.zeros(0, np.uint32)
        self.stats = json.loads((self.directory / "stats.json").read_text())

    def shingles_of(self, local: int) -> np.ndarray:
        return self.shingles[self.shingle_offsets[local] : self.shingle_offsets[local + 1]]

    def documents(self) -> Iterator[str]:
        import zstandard

        with (self.directory / "docs.zst").open("rb") as handle:
            reader = zstandard.ZstdDecompressor().stream_reader(handle)
            while header := _read_exact(reader, _LENGTH.size):
                (length,) = _LENGTH.unpack(header)
                yield _read_exact(reader, length).decode("utf-8")


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


class ShingleStore:
    """Exact Jaccard similarity of documents addressed by their global index across parts."""

    def __init__(self, readers: list[PartReader]) -> None:
        self.readers = readers
        self.starts = np.cumsum([0] + [len(r.hashes) for r in readers])

    def _shingles(self, index: int) -> np.ndarray:
        part = int(np.searchsorted(self.starts, index, side="right") - 1)
        return self.readers[part].shingles_of(index - int(self.starts[part]))

    def similarity(self, pairs: np.ndarray) -> np.ndarray:
        from .dedup.minhash import exact_jaccard

        return np.array([exact_jaccard(self._shingles(a), self._shingles(b)) for a, b in pairs.tolist()])

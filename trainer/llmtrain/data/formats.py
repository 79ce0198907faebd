"""Input formats: compression by magic bytes, then documents out of txt, jsonl or parquet.

Memory stays bounded whatever the input: lines and documents are read with a byte limit, and parquet
files are read in record batches of one column.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from ..storage import StorageError

MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bz2",
    b"\xfd7zXZ\x00": "xz",
}
COMPRESSED_SUFFIXES = (".gz", ".gzip", ".zst", ".zstd", ".bz2", ".xz")


class InputError(Exception):
    """An input that cannot be read at all or past some point; `reason` is counted in the stats."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BadSpec(Exception):
    """The input contradicts the spec (e.g. a parquet file without `textField`): permanent."""


@dataclass
class Raw:
    """A document before decoding: bytes (txt) or text (jsonl, parquet, sql)."""

    content: bytes | str


@dataclass
class Rejected:
    """A document dropped while reading, with the reason counted in `status.stats.rejected`."""

    reason: str


def compression_of(head: bytes) -> str | None:
    return next((kind for magic, kind in MAGIC.items() if head.startswith(magic)), None)


def decompressed(stream: IO[bytes]) -> IO[bytes]:
    """The stream, transparently decompressed when its first bytes say gzip, zstd, bz2 or xz."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(_Raw(stream), 1 << 16)
    kind = compression_of(buffered.peek(8)[:8])
    if kind == "gzip":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(buffered)  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(buffered)  # type: ignore[return-value]
    return buffered


class _Raw(io.RawIOBase):
    """Adapts any object with read() (e.g. a botocore StreamingBody) to RawIOBase."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def format_of(name: str, configured: str) -> str:
    """txt, jsonl or parquet: the configured format, or by extension when `auto`."""
    if configured != "auto":
        return configured
    lowered = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
            break
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith(".parquet"):
        return "parquet"
    return "txt"


def _lines(stream: IO[bytes], limit: int) -> Iterator[bytes | None]:
    """Lines of at most `limit` bytes; None stands for a longer line, which is skipped unread."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # drain the rest of the over-long line
                more = stream.readline(1 << 20)
                if not more or more.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def iter_txt(stream: IO[bytes], unit: str, limit: int) -> Iterator[Raw | Rejected]:
    """txt documents: the whole file, blank-line separated paragraphs, or lines."""
    if unit == "file":
        data = stream.read(limit + 1)
        if len(data) > limit:
            while stream.read(1 << 20):
                pass
            yield Rejected("too_long")
        elif data:
            yield Raw(data)
        return
    paragraph: list[bytes] = []
    size = 0
    for line in _lines(stream, limit):
        if line is None:
            yield Rejected("too_long")
            continue
        if unit == "line":
            if line.strip():
                yield Raw(line.rstrip(b"\r\n"))
            continue
        if line.strip():
            paragraph.append(line)
            size += len(line)
            if size > limit:
                yield Rejected("too_long")
                paragraph, size = [], 0
        elif paragraph:
            yield Raw(b"".join(paragraph).rstrip(b"\r\n"))
            paragraph, size = [], 0
    if paragraph:
        yield Raw(b"".join(paragraph).rstrip(b"\r\n"))


def iter_jsonl(stream: IO[bytes], text_field: str, limit: int) -> Iterator[Raw | Rejected]:
    """One document per JSON line, its text in `text_field`; bad lines are counted, not fatal."""
    for line in _lines(stream, limit):
        if line is None:
            yield Rejected("too_long")
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except UnicodeDecodeError:
            yield Rejected("undecodable")
            continue
        except (json.JSONDecodeError, RecursionError):
            yield Rejected("malformed_json")
            continue
        text = record.get(text_field) if isinstance(record, dict) else None
        yield Raw(text) if isinstance(text, str) else Rejected("missing_text_field")


def iter_parquet(stream: IO[bytes], text_field: str, name: str) -> Iterator[Raw | Rejected]:
    """Documents of one parquet column, read batch by batch (spooled to disk when not seekable)."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        try:
            parquet = pq.ParquetFile(spool)
        except Exception as exc:  # pyarrow raises ArrowInvalid and friends
            raise InputError("unreadable_input", f"{name}: not a parquet file ({exc})") from exc
        columns = parquet.schema_arrow.names
        if text_field not in columns:
            raise BadSpec(
                f"{name}: parquet file has no column {text_field!r} (columns: {', '.join(columns)}); set spec.textField"
            )
        for batch in parquet.iter_batches(columns=[text_field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                yield Raw(value) if isinstance(value, str) else Rejected("missing_text_field")


def iter_documents(
    stream: IO[bytes], name: str, fmt: str, text_field: str, txt_unit: str, limit: int
) -> Iterator[Raw | Rejected]:
    """Documents of one input; a corrupt or truncated compressed stream raises InputError at that point."""
    try:
        source = decompressed(stream)
        kind = format_of(name, fmt)
        if kind == "parquet":
            yield from iter_parquet(source, text_field, name)
        elif kind == "jsonl":
            yield from iter_jsonl(source, text_field, limit)
        else:
            yield from iter_txt(source, txt_unit, limit)
    except EOFError as exc:
        raise InputError("truncated_input", f"{name}: truncated compressed data ({exc})") from exc
    except StorageError:
        raise  # the store failed, not the data: retryable, never skipped
    except (gzip.BadGzipFile, lzma.LZMAError, OSError) as exc:
        raise InputError("unreadable_input", f"{name}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard") or type(exc).__name__ == "ZstdError":
            raise InputError("truncated_input", f"{name}: corrupt zstd data ({exc})") from exc
        raise

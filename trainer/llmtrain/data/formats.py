"""Input formats: compression by magic bytes, then documents out of txt, jsonl or parquet.

Memory, disk and CPU stay bounded whatever the input: lines and documents are read with a byte limit,
parquet files are read in record batches of one column (dictionary-encoded values are never expanded
for the whole batch), and what an input may expand to is bounded (`ExpansionBudget`): decompression and
parquet decoding stop with a counted `decompression_bomb` past `MAX_EXPANSION_RATIO` times the input's
own size (or `EXPANSION_ALLOWANCE`, whichever is larger).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from ..errors import BadInput
from ..storage import StorageError

MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bz2",
    b"\xfd7zXZ\x00": "xz",
}
COMPRESSED_SUFFIXES = (".gz", ".gzip", ".zst", ".zstd", ".bz2", ".xz")

#: An input may expand (decompression, parquet decoding) to this many times its stored size ...
MAX_EXPANSION_RATIO = 1000
#: ... or to this many bytes, whichever is larger (so small legitimate inputs are never refused).
EXPANSION_ALLOWANCE = 64 << 20
#: Bytes read from a decompressor per call: the budget is checked at least this often.
_CHUNK = 1 << 20
#: Byte-order marks, longest first (a UTF-32-LE BOM begins with the UTF-16-LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class InputError(BadInput):
    """An input that cannot be read at all or past some point; `reason` is counted in the stats."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BadSpec(BadInput):
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


class _Counting(io.RawIOBase):
    """Adapts any object with read() (e.g. a botocore StreamingBody) to RawIOBase; counts what it reads."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


class ExpansionBudget:
    """How many bytes one input may expand to: a ratio of the bytes read from storage, with a floor."""

    def __init__(self, name: str, stored: _Counting) -> None:
        self.name, self._stored, self.spent = name, stored, 0

    @classmethod
    def of_stored_size(cls, name: str, size: int) -> ExpansionBudget:
        """The budget of an input whose stored size is known up front (a dataset folder)."""
        stored = _Counting(io.BytesIO())
        stored.count = size
        return cls(name, stored)

    def spend(self, size: int) -> None:
        """Count `size` produced bytes; raises InputError("decompression_bomb") past the budget."""
        self.spent += size
        self.check(self.spent, "expands")

    def check(self, size: int, what: str) -> None:
        allowed = max(EXPANSION_ALLOWANCE, MAX_EXPANSION_RATIO * self._stored.count)
        if size > allowed:
            raise InputError(
                "decompression_bomb",
                f"{self.name}: {what} to more than {allowed} bytes from {self._stored.count} stored bytes"
                f" (more than {MAX_EXPANSION_RATIO}x); refusing the rest of it",
            )


class _Bounded(io.RawIOBase):
    """The output of a decompressor as RawIOBase, its size charged to the input's budget."""

    def __init__(self, decompressor: Any, budget: ExpansionBudget) -> None:
        self._decompressor, self._budget = decompressor, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._decompressor.read1(min(len(buffer), _CHUNK))  # what is decoded so far: kept if it ends early
        self._budget.spend(len(data))
        buffer[: len(data)] = data
        return len(data)


def decompressed(stream: IO[bytes], name: str = "input") -> tuple[io.BufferedReader, ExpansionBudget]:
    """The stream, transparently decompressed when its first bytes say gzip, zstd, bz2 or xz, as a
    buffered reader (readline and peek work for every kind), with the input's expansion budget."""
    stored = _Counting(stream)
    buffered = io.BufferedReader(stored, 1 << 16)
    budget = ExpansionBudget(name, stored)
    kind = compression_of(buffered.peek(8)[:8])
    if kind is None:
        return buffered, budget
    return io.BufferedReader(_Bounded(_decompressor(kind, buffered), budget), 1 << 16), budget


def _decompressor(kind: str, buffered: io.BufferedReader) -> Any:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=buffered)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    if kind == "bz2":
        return bz2.BZ2File(buffered)
    return lzma.LZMAFile(buffered)


def text_encoding_of(head: bytes) -> str | None:
    """The UTF-16/32 encoding a text starts with: by its BOM, or UTF-16 without one when every other
    byte is NUL (ASCII-range text); None for anything else (UTF-8, legacy charsets, binary)."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    pairs = len(head) // 2
    if pairs < 2:
        return None
    even_nul, odd_nul = head[0 : 2 * pairs : 2].count(0), head[1 : 2 * pairs : 2].count(0)
    if odd_nul >= 0.9 * pairs and even_nul <= 0.01 * pairs:
        return "utf-16-le"
    if even_nul >= 0.9 * pairs and odd_nul <= 0.01 * pairs:
        return "utf-16-be"
    return None


class _Utf8(io.RawIOBase):
    """A UTF-16/32 byte stream re-encoded as UTF-8, so lines split where the text's newlines are."""

    def __init__(self, stream: IO[bytes], encoding: str) -> None:
        self._text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")  # type: ignore[arg-type]
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = self._text.read(max(1, len(buffer) // 4))
            if not chunk:
                return 0
            self._pending = chunk.encode("utf-8")
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size


def as_utf8(stream: io.BufferedReader) -> io.BufferedReader:
    """UTF-16 and UTF-32 text (with a BOM, or UTF-16 without one) re-encoded as UTF-8; else as it is."""
    encoding = text_encoding_of(stream.peek(4096)[:4096])
    return stream if encoding is None else io.BufferedReader(_Utf8(stream, encoding), 1 << 16)


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
        if line.strip():
            yield _json_document(line, text_field)


def _json_document(line: bytes, text_field: str) -> Raw | Rejected:
    """The text of one JSON line, or why it has none: any odd value is a counted rejection."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return Rejected("undecodable")
    except (ValueError, RecursionError):  # bad JSON, and integers past Python's digit limit
        return Rejected("malformed_json")
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        return Rejected("missing_text_field")
    if not encodable(text):  # a lone surrogate escape such as "\ud800"
        return Rejected("undecodable")
    return Raw(text)


def encodable(text: str) -> bool:
    """Whether text can be written as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def iter_parquet(
    stream: IO[bytes],
    text_field: str,
    name: str,
    limit: int,
    budget: ExpansionBudget,
    row_groups: tuple[int, int] | None = None,
) -> Iterator[Raw | Rejected]:
    """Documents of one parquet column, batch by batch (spooled to disk when not seekable, within the
    input's budget), of every row group or of row groups `[first, last)` only. Column chunks that claim
    to expand past the budget are refused before they are read; values are taken one at a time out of
    the batch's dictionary, so none larger than `limit` is ever copied into a Python string and
    repetition costs no memory."""
    import pyarrow.parquet as pq

    with tempfile.TemporaryFile() as spool:
        while chunk := stream.read(_CHUNK):
            spool.write(chunk)
        size = spool.tell()
        spool.seek(0)
        try:
            columns = pq.ParquetFile(spool).schema_arrow.names
        except Exception as exc:  # pyarrow raises ArrowInvalid and friends
            raise InputError("unreadable_input", f"{name}: not a parquet file ({exc})") from exc
        if text_field not in columns:
            raise BadSpec(
                f"{name}: parquet file has no column {text_field!r} (columns: {', '.join(columns)}); set spec.textField"
            )
        parquet = pq.ParquetFile(spool, read_dictionary=[text_field])
        groups = list(range(*(row_groups or (0, parquet.metadata.num_row_groups))))
        _check_column_chunks(parquet, text_field, budget, size, groups)
        for batch in parquet.iter_batches(columns=[text_field], batch_size=256, row_groups=groups):
            yield from column_documents(batch.column(0), limit, budget)


def _check_column_chunks(parquet: Any, text_field: str, budget: ExpansionBudget, size: int, groups: list[int]) -> None:
    """Refuse, from the metadata alone, a file whose text column (in the row groups read) decompresses
    past the budget."""
    metadata = parquet.metadata
    leaves = [j for j in range(metadata.num_columns) if metadata.schema.column(j).path.split(".")[0] == text_field]
    total = sum(metadata.row_group(i).column(j).total_uncompressed_size for i in groups for j in leaves)
    budget.check(max(total, size), f"column {text_field!r} decompresses")


def column_documents(column: Any, limit: int, budget: ExpansionBudget) -> Iterator[Raw | Rejected]:
    """The documents of one arrow text column: values past `limit` bytes are rejected without being
    copied, the others charged to `budget`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        values, indices = column.dictionary, column.indices.to_pylist()
    else:
        values = column
        indices = [i if valid else None for i, valid in enumerate(column.is_valid().to_pylist())]
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        yield from (Rejected("missing_text_field") for _ in indices)
        return
    sizes = pc.binary_length(values).to_pylist()
    for index in indices:
        if index is None or sizes[index] is None:
            yield Rejected("missing_text_field")
        elif sizes[index] > limit:
            yield Rejected("too_long")
        else:
            budget.spend(sizes[index])
            yield Raw(values[index].as_py())


def iter_documents(
    stream: IO[bytes],
    name: str,
    fmt: str,
    text_field: str,
    txt_unit: str,
    limit: int,
    plain: bool = False,
    row_groups: tuple[int, int] | None = None,
) -> Iterator[Raw | Rejected]:
    """Documents of one input; a corrupt, truncated or over-expanding input raises InputError at that
    point (what came before is kept). `plain`: a byte range of a file already known to be uncompressed
    UTF-8 (`units.py`), read as it is: its first bytes are a record's, not the file's magic or BOM.
    `row_groups`: of a parquet file, only row groups `[first, last)`."""
    try:
        source, budget = (stream, ExpansionBudget.of_stored_size(name, 0)) if plain else decompressed(stream, name)
        kind = format_of(name, fmt)
        if kind == "parquet":
            yield from iter_parquet(source, text_field, name, limit, budget, row_groups)
        elif kind == "jsonl":
            yield from iter_jsonl(source if plain else as_utf8(source), text_field, limit)
        else:
            yield from iter_txt(source if plain else as_utf8(source), txt_unit, limit)
    except (InputError, BadSpec, StorageError):
        raise  # counted by the caller; a bad spec or a failed store is never skipped
    except EOFError as exc:
        raise InputError("truncated_input", f"{name}: truncated compressed data ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError("undecodable", f"{name}: invalid UTF-16/UTF-32 text ({exc.reason})") from exc
    except (gzip.BadGzipFile, lzma.LZMAError, OSError) as exc:
        raise InputError("unreadable_input", f"{name}: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("zstandard") or type(exc).__name__ == "ZstdError":
            raise InputError("truncated_input", f"{name}: corrupt zstd data ({exc})") from exc
        raise

"""Units of scan work and their division into parts.

A unit is a whole input, a record-aligned byte range of a large one (`ranges.py`), or a run of a
parquet file's row groups. Units follow the input listing in (input, offset) order, and each part takes
a contiguous run of them, balanced by bytes: the parts' documents, concatenated in part order, are those
of one sequential read whatever the number of parts, so the kept set and the output bytes do not depend
on it.

Local, PVC and S3 files are split by bytes where documents are lines (`jsonl`, `txt` with
`txtUnit: line`) and the file is uncompressed UTF-8 (its first bytes say so: one ranged GET on S3; each
S3 range is then read with a ranged GET from its own offset); local and PVC parquet files by row groups.
A file is split when it is larger than its part's share of the input bytes (and than
`MIN_RANGE_BYTES`), into ranges of about that share.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..api.datasource import DataSourceSpec
from .formats import compression_of, format_of, text_encoding_of
from .sources import InputRef

#: no range is smaller than this (opening and aligning a range costs a seek and one partial line)
MIN_RANGE_BYTES = 64 << 10
#: bytes of a file's head that decide whether it is plain UTF-8 (as `formats.as_utf8` peeks)
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class Unit:
    """One input; or of `input`, the records that begin in bytes `[start, end)`, or its row groups
    `[start, end)` when `row_groups`."""

    input: InputRef
    start: int = 0
    end: int | None = None
    row_groups: bool = False
    #: the stored bytes it covers (about, for row groups); None when unknown
    size: int | None = None

    @classmethod
    def whole(cls, ref: InputRef) -> Unit:
        return cls(ref, size=ref.size)

    @property
    def byte_range(self) -> tuple[int, int] | None:
        return None if self.end is None or self.row_groups else (self.start, self.end)

    @property
    def row_group_range(self) -> tuple[int, int] | None:
        return (self.start, self.end) if self.row_groups and self.end is not None else None


def divide(spec: DataSourceSpec, inputs: list[InputRef], count: int) -> list[list[Unit]]:
    """The units of each of `count` parts (some may be empty), deterministic from the listing."""
    share = max(MIN_RANGE_BYTES, -(-sum(ref.size or 0 for ref in inputs) // count))
    units = [unit for ref in inputs for unit in _units(spec, ref, share)]
    return _contiguous(units, count)


def _units(spec: DataSourceSpec, ref: InputRef, share: int) -> list[Unit]:
    size = ref.size or 0
    source = spec.sources[ref.source]
    on_files = source.local is not None or source.pvc is not None
    if size <= share or not (on_files or source.s3 is not None):
        return [Unit.whole(ref)]
    pieces = -(-size // share)
    kind = format_of(ref.uri, spec.format)
    if kind == "parquet":
        return _row_group_units(ref, pieces) if on_files else [Unit.whole(ref)]
    if (kind == "jsonl" or (kind == "txt" and spec.txt_unit == "line")) and _plain_utf8(spec, ref):
        bounds = [size * k // pieces for k in range(pieces + 1)]
        return [Unit(ref, start, end, size=end - start) for start, end in itertools.pairwise(bounds)]
    return [Unit.whole(ref)]


def _plain_utf8(spec: DataSourceSpec, ref: InputRef) -> bool:
    """Whether a file's byte range can be read on its own: not compressed, not UTF-16/32."""
    from .sources import files, s3

    source = spec.sources[ref.source]
    if source.s3 is not None:
        head = s3.read_head(source.s3, ref.uri, _HEAD_BYTES)
    else:
        with files.open_file(ref.uri, ref.root) as handle:
            head = handle.read(_HEAD_BYTES)
    return compression_of(head) is None and text_encoding_of(head) is None


def _row_group_units(ref: InputRef, pieces: int) -> list[Unit]:
    """Runs of a parquet file's row groups, by count, each weighed by its compressed bytes; the whole
    file when it has one row group or is not parquet (the reader then says why)."""
    import pyarrow.parquet as pq

    from .sources import files

    with files.open_file(ref.uri, ref.root) as handle:
        try:
            metadata = pq.ParquetFile(handle).metadata
        except Exception:  # pyarrow raises ArrowInvalid and friends; reading the file reports it
            return [Unit.whole(ref)]
    groups = metadata.num_row_groups
    sizes = [
        sum(metadata.row_group(i).column(j).total_compressed_size for j in range(metadata.num_columns))
        for i in range(groups)
    ]
    pieces = min(pieces, groups)
    if pieces <= 1:
        return [Unit.whole(ref)]
    bounds = [groups * k // pieces for k in range(pieces + 1)]
    return [
        Unit(ref, start, end, row_groups=True, size=sum(sizes[start:end])) for start, end in itertools.pairwise(bounds)
    ]


def _contiguous(units: list[Unit], count: int) -> list[list[Unit]]:
    """Runs of consecutive units, balanced by size (by number when a size is unknown): a unit goes to
    the part its middle byte falls in."""
    known = [unit.size for unit in units if unit.size is not None]
    weights = known if len(known) == len(units) and sum(known) else [1] * len(units)
    total = sum(weights)
    groups: list[list[Unit]] = [[] for _ in range(count)]
    before = 0
    for unit, weight in zip(units, weights, strict=True):
        groups[min(count - 1, (2 * before + weight) * count // (2 * total))].append(unit)
        before += weight
    return groups

"""Sources: list the inputs of each `spec.sources[]` entry, then read each input's documents.

Listing is deterministic (sources in spec order, inputs sorted by name) so N workers can divide the
inputs (`units.py`) and a rerun sees the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...api.datasource import DataSourceSpec
from ...errors import MaybeRetryable
from ..formats import Raw, Rejected, iter_documents


class SourceError(MaybeRetryable):
    """A source cannot be listed or read; `retryable` when trying again may help."""


@dataclass(frozen=True)
class InputRef:
    """One input: a file, an object, a URL, or a query."""

    source: int  # index into spec.sources
    uri: str
    size: int | None = None
    #: files only: the resolved folder the file must stay in; `uri` is the resolved file below it
    root: str | None = None


def list_inputs(spec: DataSourceSpec, base_dir: Path) -> list[InputRef]:
    from . import files, hf, s3, sql

    inputs: list[InputRef] = []
    for index, source in enumerate(spec.sources):
        if source.local is not None:
            inputs += files.list_local(index, source.local, base_dir)
        elif source.pvc is not None:
            inputs += files.list_pvc(index, source.pvc)
        elif source.s3 is not None:
            inputs += s3.list_objects(index, source.s3)
        elif source.http is not None:
            inputs += [InputRef(index, url) for url in source.http.urls]
        elif source.sql is not None:
            inputs.append(sql.query_ref(index, source.sql))
        elif source.huggingface is not None:
            inputs.append(hf.resolve(index, source.huggingface, base_dir))
    return inputs


def read_input(
    ref: InputRef,
    spec: DataSourceSpec,
    limit: int,
    byte_range: tuple[int, int] | None = None,
    row_groups: tuple[int, int] | None = None,
) -> Iterator[Raw | Rejected]:
    """The documents of one input; of a local, PVC or S3 file, only those of the records that begin in
    `byte_range`; of a local or PVC parquet file, those of row groups `row_groups` (`units.py`). Raises
    formats.InputError for a corrupt input, SourceError when the source fails."""
    from ..ranges import lines_of, range_origin, record_range
    from . import files, hf, http, s3, sql

    source = spec.sources[ref.source]
    if (row_groups and source.local is None and source.pvc is None) or (byte_range and source.http is not None):
        raise ValueError(f"{ref.uri}: this source is not read in ranges")
    if source.sql is not None:
        yield from sql.iter_rows(source.sql, limit)
        return
    if source.huggingface is not None:
        yield from hf.iter_rows(ref.uri, source.huggingface, spec.text_field, limit)
        return
    if source.s3 is not None and byte_range is not None:  # the range's bytes only, from a ranged GET
        with s3.open_object(source.s3, ref.uri, range_origin(byte_range[0])) as body:
            records = record_range(lines_of(body), *byte_range, positioned=True)
            yield from iter_documents(records, ref.uri, spec.format, spec.text_field, spec.txt_unit, limit, plain=True)
        return
    if source.s3 is not None:
        opened = s3.open_object(source.s3, ref.uri)
    elif source.http is not None:
        opened = http.open_url(source.http, ref.uri)
    else:
        opened = files.open_file(ref.uri, ref.root)
    with opened as stream:
        if byte_range is None:
            yield from iter_documents(
                stream, ref.uri, spec.format, spec.text_field, spec.txt_unit, limit, row_groups=row_groups
            )
            return
        records = record_range(stream, *byte_range)
        yield from iter_documents(records, ref.uri, spec.format, spec.text_field, spec.txt_unit, limit, plain=True)

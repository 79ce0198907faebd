"""Record-aligned byte ranges read every record exactly once; units divide inputs into contiguous,
balanced parts, splitting only what can be split."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import random

import pytest

from llmtrain.api.datasource import DataSourceSpec
from llmtrain.data import units
from llmtrain.data.ranges import record_range
from llmtrain.data.sources import list_inputs, read_input
from support.paths import ROOT

HAMLET = ROOT / "examples/data/shakespeare/hamlet.txt"


def read_range(data: bytes, start: int, end: int) -> bytes:
    return record_range(io.BytesIO(data), start, end).read()


def lines_of(seed: int) -> bytes:
    """Lines of random lengths (empty ones and some longer than a range), the last without a newline."""
    rng = random.Random(seed)
    lines = [bytes([97 + rng.randrange(26)]) * rng.choice([0, 1, 5, 80, 3000]) for _ in range(300)]
    return b"\n".join(lines)


@pytest.mark.parametrize("seed", range(5))
def test_consecutive_ranges_read_every_record_once(seed):
    data = lines_of(seed)
    rng = random.Random(seed)
    bounds = sorted({0, len(data), *(rng.randrange(len(data)) for _ in range(40))})
    pieces = [read_range(data, start, end) for start, end in itertools.pairwise(bounds)]
    assert b"".join(pieces) == data
    for i, piece in enumerate(pieces):
        if any(pieces[i + 1 :]):
            assert piece.endswith(b"\n") or not piece  # a range ends on a record boundary


def test_a_record_crossing_a_boundary_is_read_by_the_range_it_begins_in():
    data = b"first\nsecond record crosses\nthird\n"
    boundary = data.index(b"crosses")
    assert read_range(data, 0, boundary) == b"first\nsecond record crosses\n"
    assert read_range(data, boundary, len(data)) == b"third\n"
    start_of_third = data.index(b"third")
    assert (
        read_range(data, 0, start_of_third) == b"first\nsecond record crosses\n"
    )  # a record beginning at end is not ours
    assert read_range(data, start_of_third, len(data)) == b"third\n"
    assert read_range(data, 1, 3) == b""  # no record begins inside


def source_spec(path: str, **extra) -> DataSourceSpec:
    return DataSourceSpec.model_validate({"sources": [{"local": {"path": path}}], **extra})


def texts(spec: DataSourceSpec, work: list[units.Unit]) -> list[str]:
    items = [
        item for unit in work for item in read_input(unit.input, spec, 1 << 20, unit.byte_range, unit.row_group_range)
    ]
    return [item.content.decode() if isinstance(item.content, bytes) else item.content for item in items]


@pytest.fixture
def corpus(tmp_path):
    """hamlet.txt (~170 KB) as it is, as jsonl (one line a record), and gzipped jsonl."""
    (tmp_path / "hamlet.txt").write_bytes(HAMLET.read_bytes())
    records = [json.dumps({"text": line}) for line in HAMLET.read_text().splitlines() if line.strip()]
    (tmp_path / "hamlet.jsonl").write_text("\n".join(records) + "\n")
    (tmp_path / "hamlet.jsonl.gz").write_bytes(gzip.compress((tmp_path / "hamlet.jsonl").read_bytes()))
    return tmp_path


def test_a_whole_file_document_is_one_unit_and_the_other_part_is_empty(corpus):
    spec = source_spec(str(corpus / "hamlet.txt"))
    divided = units.divide(spec, list_inputs(spec, corpus), 2)
    assert [len(part) for part in divided] == [0, 1]
    assert divided[1][0].byte_range is None


@pytest.mark.parametrize(("count", "pieces"), [(1, 1), (2, 2), (3, 3), (8, 4)])
def test_a_large_jsonl_file_splits_into_ranges_and_reads_the_same(corpus, count, pieces):
    spec = source_spec(str(corpus / "hamlet.jsonl"))
    inputs = list_inputs(spec, corpus)
    divided = units.divide(spec, inputs, count)
    flat = [unit for part in divided for unit in part]
    assert len(flat) == pieces and len(divided) == count
    assert [unit.start for unit in flat] == sorted(unit.start for unit in flat)
    whole = texts(spec, [units.Unit.whole(inputs[0])])
    assert texts(spec, flat) == whole
    assert [text for part in divided for text in texts(spec, part)] == whole


def test_txt_lines_split_but_paragraphs_and_compressed_streams_do_not(corpus):
    lines = source_spec(str(corpus / "hamlet.txt"), txtUnit="line")
    assert len([u for part in units.divide(lines, list_inputs(lines, corpus), 2) for u in part]) == 2
    paragraphs = source_spec(str(corpus / "hamlet.txt"), txtUnit="paragraph")
    assert len([u for part in units.divide(paragraphs, list_inputs(paragraphs, corpus), 2) for u in part]) == 1
    packed = source_spec(str(corpus / "hamlet.jsonl.gz"))
    assert len([u for part in units.divide(packed, list_inputs(packed, corpus), 2) for u in part]) == 1


def test_utf16_text_is_not_split(tmp_path):
    (tmp_path / "wide.txt").write_bytes(HAMLET.read_text().encode("utf-16"))
    spec = source_spec(str(tmp_path / "wide.txt"), txtUnit="line")
    assert len([u for part in units.divide(spec, list_inputs(spec, tmp_path), 2) for u in part]) == 1


def test_parts_are_contiguous_runs_balanced_by_size(tmp_path):
    for name, size in (("a", 10), ("b", 10), ("c", 10), ("d", 10), ("e", 40)):
        (tmp_path / f"{name}.txt").write_text("x" * size)
    spec = source_spec(str(tmp_path / "*.txt"))
    divided = units.divide(spec, list_inputs(spec, tmp_path), 2)
    assert [[unit.input.uri[-5] for unit in part] for part in divided] == [["a", "b", "c", "d"], ["e"]]


def test_a_large_parquet_file_splits_by_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = [line for line in HAMLET.read_text().splitlines() if line.strip()]
    pq.write_table(pa.table({"text": lines}), tmp_path / "hamlet.parquet", row_group_size=500, compression="none")
    spec = source_spec(str(tmp_path / "hamlet.parquet"))
    inputs = list_inputs(spec, tmp_path)
    divided = units.divide(spec, inputs, 3)
    assert [len(part) for part in divided] == [1, 1, 1]
    assert all(part[0].row_group_range is not None for part in divided)
    assert [text for part in divided for text in texts(spec, part)] == texts(spec, [units.Unit.whole(inputs[0])])
    assert texts(spec, [units.Unit.whole(inputs[0])]) == lines

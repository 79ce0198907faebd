"""Formats: compression by magic bytes, txt units, jsonl and parquet, bounded reads, corrupt input."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma

import pytest
import zstandard

from llmtrain.data.formats import BadSpec, InputError, Raw, Rejected, format_of, iter_documents

TEXT = b"First paragraph line one.\nline two.\n\nSecond paragraph.\n\n\nThird.\n"


def docs(data: bytes, name: str = "x.txt", fmt: str = "auto", unit: str = "file", limit: int = 1 << 20):
    return list(iter_documents(io.BytesIO(data), name, fmt, "text", unit, limit))


@pytest.mark.parametrize(
    "compress",
    [lambda b: b, gzip.compress, zstandard.ZstdCompressor().compress, bz2.compress, lzma.compress],
    ids=["plain", "gzip", "zstd", "bz2", "xz"],
)
def test_compression_detected_by_magic_not_name(compress):
    assert docs(compress(TEXT), name="no-extension") == [Raw(TEXT)]


def test_txt_units():
    assert [d.content for d in docs(TEXT, unit="paragraph")] == [
        b"First paragraph line one.\nline two.",
        b"Second paragraph.",
        b"Third.",
    ]
    assert len(docs(TEXT, unit="line")) == 4


def test_txt_too_long_is_counted_and_memory_bounded():
    assert docs(b"a" * 5000, limit=100) == [Rejected("too_long")]
    long_line = b"x" * 10_000 + b"\nshort\n"
    assert docs(long_line, unit="line", limit=100) == [Rejected("too_long"), Raw(b"short")]


def test_jsonl_good_bad_and_missing_field():
    lines = [
        json.dumps({"text": "hello"}),
        "{not json",
        json.dumps({"body": "no text field"}),
        json.dumps({"text": 42}),
        "",
        json.dumps({"text": "w\u00f6rld"}),
        json.dumps(["a", "list"]),
        b"\xff\xfe bad utf8".decode("latin-1"),
    ]
    data = "\n".join(lines).encode("utf-8")
    assert docs(data, name="c.jsonl.gz") == [
        Raw("hello"),
        Rejected("malformed_json"),
        Rejected("missing_text_field"),
        Rejected("missing_text_field"),
        Raw("w\u00f6rld"),
        Rejected("missing_text_field"),
        Rejected("malformed_json"),
    ]


def test_deeply_nested_json_is_a_counted_rejection():
    assert docs(b"[" * 100_000 + b"]" * 100_000 + b"\n", fmt="jsonl") == [Rejected("malformed_json")]


def test_parquet_batches_and_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["a", None, "b"] * 1000, "id": list(range(3000))}), path, row_group_size=500)
    out = docs(path.read_bytes(), name="c.parquet")
    assert len(out) == 3000 and out[:3] == [Raw("a"), Rejected("missing_text_field"), Raw("b")]
    with pytest.raises(BadSpec, match=r"has no column 'text' \(columns: body\); set spec\.textField"):
        pq.write_table(pa.table({"body": ["a"]}), path)
        docs(path.read_bytes(), name="c.parquet")


def test_truncated_gzip_keeps_what_came_before_then_raises():
    data = gzip.compress(b"\n".join(b'{"text": "doc %d"}' % i for i in range(5000)))
    stream = iter_documents(io.BytesIO(data[: len(data) // 2]), "c.jsonl.gz", "auto", "text", "file", 1 << 20)
    seen = []
    with pytest.raises(InputError) as caught:
        for doc in stream:
            seen.append(doc)
    assert caught.value.reason == "truncated_input" and 0 < len(seen) < 5000
    assert all(isinstance(d, Raw) and d.content.startswith("doc ") for d in seen)


def test_not_a_parquet_file():
    with pytest.raises(InputError, match="not a parquet file"):
        docs(b"plain text", name="c.parquet")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.jsonl.zst", "jsonl"), ("a.ndjson", "jsonl"), ("a.parquet", "parquet"), ("a.txt.gz", "txt"), ("README", "txt")],
)
def test_format_by_extension(name, fmt):
    assert format_of(name, "auto") == fmt
    assert format_of(name, "jsonl") == "jsonl"

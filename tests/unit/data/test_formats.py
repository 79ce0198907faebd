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


COMPRESSIONS = {
    "none": lambda b: b,
    "gz": gzip.compress,
    "zst": zstandard.ZstdCompressor().compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}
PARAGRAPHS = ["Para one, line one.\nline two.", "Para two \u00e9t\u00e9.", "Para three " + "long " * 40_000]


def _corpus(fmt: str, tmp_path) -> bytes:
    if fmt == "jsonl":
        return "\n".join(json.dumps({"text": p}) for p in PARAGRAPHS).encode() + b"\n"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": PARAGRAPHS}), tmp_path / "c.parquet", row_group_size=2)
        return (tmp_path / "c.parquet").read_bytes()
    return "\n\n".join(PARAGRAPHS).encode() + b"\n"


@pytest.mark.parametrize("compression", list(COMPRESSIONS))
@pytest.mark.parametrize(
    ("fmt", "unit"),
    [("txt", "file"), ("txt", "paragraph"), ("txt", "line"), ("jsonl", "file"), ("parquet", "file")],
)
def test_every_compression_gives_the_documents_of_the_plain_file(tmp_path, compression, fmt, unit):
    plain = _corpus(fmt, tmp_path)
    expected = docs(plain, name=f"c.{fmt}", unit=unit)
    assert expected and all(isinstance(d, Raw) for d in expected)
    suffix = "" if compression == "none" else f".{compression}"
    assert docs(COMPRESSIONS[compression](plain), name=f"c.{fmt}{suffix}", unit=unit) == expected


@pytest.mark.parametrize("unit", ["file", "paragraph", "line"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_text_is_read_as_text_not_binary(encoding, unit):
    from llmtrain.data.validate import decode

    text = "Caf\u00e9 first line.\nSecond line \u4e2d\u6587.\n\nThird paragraph.\n"
    expected = docs(text.encode("utf-8"), unit=unit)
    got = docs(text.encode(encoding), unit=unit)
    assert got == expected
    assert [decode(d.content).text for d in got] == [decode(d.content).text for d in expected]


def test_utf16_bytes_from_other_sources_decode_by_bom():
    from llmtrain.data.validate import decode

    assert decode("Hello, UTF-16 world.".encode("utf-16")).text == "Hello, UTF-16 world."
    assert decode(b"\x00\x01\x02\x00" * 100).reason == "binary"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"text": 42}', "missing_text_field"),
        (b'{"text": ["a", "list"]}', "missing_text_field"),
        (b'{"text": {"an": "object"}}', "missing_text_field"),
        (b'{"text": null}', "missing_text_field"),
        (b'["a", "top-level", "array"]', "missing_text_field"),
        (b'"a bare string"', "missing_text_field"),
        (b'{"text": "lone \\ud800 surrogate"}', "undecodable"),
        (b'{"text": "ok", "n": 1' + b"0" * 5000 + b"}", "malformed_json"),
        (b'{"text": 1' + b"0" * 5000 + b"}", "malformed_json"),
        (b'{"text": "a", "x": 1e999999}', None),
        (b'{"text": "bad \xff utf-8"}', "undecodable"),
    ],
)
def test_one_malformed_json_line_is_a_counted_rejection(line, reason):
    before, after = b'{"text": "before"}', b'{"text": "after"}'
    out = docs(b"\n".join([before, line, after]) + b"\n", name="c.jsonl")
    middle = Raw("a") if reason is None else Rejected(reason)
    assert out == [Raw("before"), middle, Raw("after")]


@pytest.fixture
def small_budget(monkeypatch):
    """Expansion bounds small enough that a test's bomb is quick to make."""
    from llmtrain.data import formats

    monkeypatch.setattr(formats, "EXPANSION_ALLOWANCE", 1 << 20)
    monkeypatch.setattr(formats, "MAX_EXPANSION_RATIO", 100)


@pytest.mark.parametrize("compression", ["gz", "zst", "bz2", "xz"])
@pytest.mark.parametrize(("fmt", "unit"), [("txt", "file"), ("txt", "line"), ("jsonl", "file"), ("parquet", "file")])
def test_decompression_bombs_are_refused_as_counted_rejections(small_budget, compression, fmt, unit):
    bomb = COMPRESSIONS[compression](b"\n" * (8 << 20))
    with pytest.raises(InputError, match=rf"c\.{fmt}\.{compression}: expands to more than") as caught:
        docs(bomb, name=f"c.{fmt}.{compression}", unit=unit, limit=16 << 20)
    assert caught.value.reason == "decompression_bomb"


def test_the_default_bounds_stop_a_zstd_bomb():
    compressor = zstandard.ZstdCompressor().compressobj()
    zeros = bytes(1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(80)) + compressor.flush()
    with pytest.raises(InputError) as caught:
        docs(bomb, name="c.txt.zst", unit="line")
    assert caught.value.reason == "decompression_bomb" and len(bomb) < 1 << 16


def test_ordinary_compressed_input_is_within_the_budget(small_budget):
    text = "\n".join(f"line {i} of an ordinary file" for i in range(200_000)).encode()
    assert len(docs(gzip.compress(text), name="c.txt.gz", unit="line")) == 200_000


def _parquet(tmp_path, table, **options) -> bytes:
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "b.parquet", **options)
    return (tmp_path / "b.parquet").read_bytes()


def test_parquet_dictionary_repetition_is_bounded(small_budget, tmp_path):
    import pyarrow as pa

    value = "w" * 100_000
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 5000, pa.int32()), pa.array([value]))
    data = _parquet(tmp_path, pa.table({"text": column}), compression="zstd")
    seen = []
    with pytest.raises(InputError) as caught:
        for doc in iter_documents(io.BytesIO(data), "b.parquet", "auto", "text", "file", 1 << 20):
            seen.append(doc)
    assert caught.value.reason == "decompression_bomb"
    assert 0 < len(seen) < 100 and seen[0] == Raw(value)


def test_parquet_column_that_decompresses_past_the_budget_is_refused_unread(small_budget, tmp_path):
    import pyarrow as pa

    data = _parquet(tmp_path, pa.table({"text": ["a" * (4 << 20)]}), compression="zstd", use_dictionary=False)
    with pytest.raises(InputError, match="column 'text' decompresses to more than") as caught:
        docs(data, name="b.parquet", limit=16 << 20)
    assert caught.value.reason == "decompression_bomb"


def test_parquet_documents_past_the_limit_are_rejected_unread(tmp_path):
    import pyarrow as pa

    data = _parquet(tmp_path, pa.table({"text": ["short", "x" * 5000, "also short"]}))
    assert docs(data, name="b.parquet", limit=1000) == [Raw("short"), Rejected("too_long"), Raw("also short")]


def test_parquet_non_text_column_is_counted(tmp_path):
    import pyarrow as pa

    data = _parquet(tmp_path, pa.table({"text": [1, None, 3]}))
    assert docs(data, name="b.parquet") == [Rejected("missing_text_field")] * 3

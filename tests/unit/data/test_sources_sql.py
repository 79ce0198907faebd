"""SQL sources on SQLite: the read deadline ends a stalled query, and documents are size-bounded."""

from __future__ import annotations

import sqlite3
import time

import pytest

from llmtrain.api.datasource import SqlSource
from llmtrain.data.formats import Raw, Rejected
from llmtrain.data.sources import SourceError, sql

#: a query that runs forever without producing a row
STALLED = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT 'text' AS body FROM c WHERE x < 0"


@pytest.fixture
def database(tmp_path, monkeypatch):
    """A SQLite file with a docs table; its URL in the Secret db/url."""
    path = tmp_path / "corpus.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body)")
    (tmp_path / "secrets/db").mkdir(parents=True)
    (tmp_path / "secrets/db/url").write_text(f"sqlite:///{path}")
    monkeypatch.setenv("LLMTRAIN_SECRETS_DIR", str(tmp_path / "secrets"))
    return path


def source(query: str) -> SqlSource:
    return SqlSource.model_validate({"urlSecret": {"name": "db", "key": "url"}, "query": query, "textColumn": "body"})


def rows(query: str, limit: int = 1000) -> list[Raw | Rejected]:
    return list(sql.iter_rows(source(query), limit))


@pytest.mark.timeout(30, method="thread")  # a signal cannot break into a running SQLite statement
def test_a_stalled_query_ends_at_the_deadline_retryably(database, monkeypatch):
    monkeypatch.setenv("LLMTRAIN_READ_DEADLINE_SECONDS", "1")
    with pytest.raises(
        SourceError, match="Secret db/url: the rows did not arrive within the deadline of 1 s"
    ) as caught:
        rows(STALLED)
    assert caught.value.retryable and caught.value.exit_code == 75
    assert "sqlite:///" not in str(caught.value)


@pytest.mark.timeout(30)
def test_a_slow_consumer_does_not_use_up_the_deadline(database, monkeypatch):
    with sqlite3.connect(database) as db:
        db.executemany("INSERT INTO docs (body) VALUES (?)", [(f"row {i}",) for i in range(4)])
    monkeypatch.setenv("LLMTRAIN_READ_DEADLINE_SECONDS", "0.5")
    seen = []
    for document in sql.iter_rows(source("SELECT body FROM docs ORDER BY id"), 1000):
        seen.append(document)
        time.sleep(0.25)  # four rows: twice the deadline spent outside the database
    assert seen == [Raw(f"row {i}") for i in range(4)]


def test_values_past_the_document_limit_are_counted_too_long(database):
    values = ["short", "x" * 1001, "\u00e9" * 600, b"b" * 1001, b"bytes", None, 42, "\u00e9" * 250]
    with sqlite3.connect(database) as db:
        db.executemany("INSERT INTO docs (body) VALUES (?)", [(v,) for v in values])
    assert rows("SELECT body FROM docs ORDER BY id", limit=1000) == [
        Raw("short"),
        Rejected("too_long"),
        Rejected("too_long"),  # 600 characters, 1200 UTF-8 bytes
        Rejected("too_long"),
        Raw(b"bytes"),
        Rejected("missing_text_field"),
        Rejected("missing_text_field"),
        Raw("\u00e9" * 250),
    ]


@pytest.mark.parametrize(
    ("dialect", "statement"),
    [
        ("postgresql", "SET statement_timeout = 1500"),
        ("mysql", "SET SESSION max_execution_time = 1500"),
        ("mariadb", "SET SESSION max_statement_time = 1.500"),
        ("sqlite", None),
    ],
)
def test_the_server_side_statement_timeout_matches_the_deadline(dialect, statement):
    assert sql.statement_timeout(dialect, 1.5) == statement

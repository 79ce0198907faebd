"""HTTP(S) and SQL sources against real servers on 127.0.0.1: a local http.server and SQLite."""

from __future__ import annotations

import gzip
import sqlite3
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT

PLAYS = sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:4]


@pytest.fixture
def http_server():
    hits: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits[self.path] += 1
            name = self.path.strip("/")
            if name == "flaky.txt" and hits[self.path] <= 2:
                self.send_response(503)
                self.end_headers()
                return
            if name.startswith("redirect?to="):  # an open redirect on the source server
                self.send_response(302)
                self.send_header("Location", name.split("=", 1)[1])
                self.end_headers()
                return
            if name == "private.txt" and self.headers.get("Authorization") != "Bearer s3cr3t-token":
                self.send_response(401)
                self.end_headers()
                return
            bodies = {p.name: p.read_bytes() for p in PLAYS}
            bodies["flaky.txt"] = bodies["private.txt"] = PLAYS[0].read_bytes()
            bodies["plays.txt.gz"] = gzip.compress(PLAYS[1].read_bytes())
            if name not in bodies:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(bodies[name])))
            self.end_headers()
            self.wfile.write(bodies[name])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def http_spec(urls, **http):
    return data_source(sources=[{"http": {"urls": urls, **http}}], tokenizer={"vocabSize": 600})


def test_http_sources_with_retry_auth_and_compression(tmp_path, http_server):
    base, hits = http_server
    (tmp_path / "secrets/web").mkdir(parents=True)
    (tmp_path / "secrets/web/authorization").write_text("Bearer s3cr3t-token\n")
    urls = [f"{base}/{PLAYS[0].name}", f"{base}/flaky.txt", f"{base}/plays.txt.gz", f"{base}/private.txt"]
    spec = write_spec(tmp_path, http_spec(urls, authSecret={"name": "web", "key": "authorization"}))
    result = run_ingest(
        "-f", str(spec), "--output", str(tmp_path / "out"), env={"LLMTRAIN_SECRETS_DIR": str(tmp_path / "secrets")}
    )
    assert result.code == 0, result.stderr
    assert result.report["stats"]["inputs"] == 4 and hits["/flaky.txt"] == 3
    # three identical bodies (direct, flaky, private) are exact duplicates
    assert result.report["stats"]["duplicatesExact"] == 2
    assert "s3cr3t-token" not in result.stderr


@pytest.mark.parametrize(
    ("path", "extra", "code", "message"),
    [
        ("/missing.txt", {}, 2, "HTTP 404"),
        (f"/{PLAYS[0].name}", {"maxBytes": 1000}, 2, "larger than maxBytes (1000 bytes)"),
    ],
)
def test_http_failures(tmp_path, http_server, path, extra, code, message):
    base, _ = http_server
    spec = write_spec(tmp_path, http_spec([base + path], **extra))
    result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"))
    assert result.code == code and message in result.report["error"]
    assert not (tmp_path / "out/manifest.json").exists()


def test_link_local_metadata_address_is_refused(tmp_path):
    spec = write_spec(tmp_path, http_spec(["http://169.254.169.254/latest/meta-data/"]))
    result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"), timeout=30)
    assert result.code == 2 and "refusing a link-local or metadata address" in result.report["error"]


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0/"]
)
def test_redirects_to_metadata_addresses_are_refused(tmp_path, http_server, target):
    base, _ = http_server
    spec = write_spec(tmp_path, http_spec([f"{base}/redirect?to={target}"]))
    result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"), timeout=30)
    assert result.code == 2 and "refusing a link-local or metadata address" in result.report["error"]
    assert not (tmp_path / "out/manifest.json").exists()


def test_credentials_do_not_follow_a_redirect_to_another_origin(tmp_path, http_server):
    base, _ = http_server
    seen: list[str | None] = []

    class Other(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = PLAYS[2].read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        (tmp_path / "secrets/web").mkdir(parents=True)
        (tmp_path / "secrets/web/authorization").write_text("Bearer s3cr3t-token\n")
        elsewhere = f"http://127.0.0.1:{other.server_address[1]}/play.txt"
        urls = [f"{base}/redirect?to={elsewhere}", f"{base}/redirect?to={base}/private.txt"]
        spec = write_spec(tmp_path, http_spec(urls, authSecret={"name": "web", "key": "authorization"}))
        env = {"LLMTRAIN_SECRETS_DIR": str(tmp_path / "secrets")}
        result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"), env=env)
    finally:
        other.shutdown()
        other.server_close()
    assert result.code == 0, result.stderr
    assert seen == [None]  # another origin: no credentials; the same origin (private.txt) still got them
    assert result.report["stats"]["inputs"] == 2


@pytest.fixture
def sqlite_db(tmp_path):
    path = tmp_path / "corpus.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT, lang TEXT)")
        for play in PLAYS:
            for paragraph in play.read_text().split("\n\n"):
                db.execute("INSERT INTO docs (body, lang) VALUES (?, 'en')", (paragraph,))
        db.execute("INSERT INTO docs (body, lang) VALUES (NULL, 'en')")
    secret = tmp_path / "secrets/db"
    secret.mkdir(parents=True)
    (secret / "url").write_text(f"sqlite:///{path}")
    return tmp_path / "secrets"


def sql_spec(query: str, column: str = "body"):
    source = {"sql": {"urlSecret": {"name": "db", "key": "url"}, "query": query, "textColumn": column}}
    return data_source(sources=[source], validation={"minChars": 40}, tokenizer={"vocabSize": 800})


def test_sql_source_streams_rows(tmp_path, sqlite_db):
    spec = write_spec(tmp_path, sql_spec("SELECT id, body FROM docs WHERE lang = 'en' ORDER BY id"))
    result = run_ingest(
        "-f", str(spec), "--output", str(tmp_path / "out"), env={"LLMTRAIN_SECRETS_DIR": str(sqlite_db)}
    )
    assert result.code == 0, result.stderr
    stats = result.report["stats"]
    assert stats["rejected"]["missing_text_field"] == 1 and stats["documentsOut"] > 500


@pytest.mark.parametrize(
    ("query", "column", "message"),
    [
        ("SELECT id FROM docs", "body", "the query returns no column 'body' (columns: id)"),
        ("SELECT body FROM no_such_table", "body", "the query failed"),
    ],
)
def test_sql_errors_name_the_fix_not_the_url(tmp_path, sqlite_db, query, column, message):
    spec = write_spec(tmp_path, sql_spec(query, column))
    result = run_ingest(
        "-f", str(spec), "--output", str(tmp_path / "out"), env={"LLMTRAIN_SECRETS_DIR": str(sqlite_db)}
    )
    assert result.code == 2 and message in result.report["error"]
    assert "sqlite:///" not in result.stderr + result.report["error"]


def _hf_spec(path: str, **extra):
    return data_source(
        sources=[{"huggingface": {"path": path, **extra}}], validation={"minChars": 40}, tokenizer={"vocabSize": 800}
    )


def test_huggingface_datasets_from_disk(tmp_path):
    import datasets

    paragraphs = [p for play in PLAYS for p in play.read_text().split("\n\n") if p.strip()]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": paragraphs, "n": list(range(len(paragraphs)))})}
    ).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "files").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": paragraphs}), tmp_path / "files" / "train-00000.parquet")
    for folder in ("saved", "files"):
        result = run_ingest("-f", str(write_spec(tmp_path, _hf_spec(folder))), "--output", str(tmp_path / folder / "o"))
        assert result.code == 0, result.stderr
        assert result.report["stats"]["documentsIn"] == len(paragraphs)
    wrong = run_ingest(
        "-f", str(write_spec(tmp_path, _hf_spec("saved", split="test"))), "--output", str(tmp_path / "x")
    )
    assert wrong.code == 2 and "no split 'test' (splits: train)" in wrong.report["error"]

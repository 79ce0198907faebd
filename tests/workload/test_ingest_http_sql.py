"""HTTP(S) and SQL sources against real servers on 127.0.0.1: a local http.server and SQLite."""

from __future__ import annotations

import contextlib
import gzip
import socket
import sqlite3
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmtrain import netpolicy
from llmtrain.api.datasource import HttpSource, S3Source
from llmtrain.data.sources import SourceError, s3
from llmtrain.data.sources.http import open_url
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
    assert result.code == 2 and "is denied to HTTP sources" in result.report["error"]


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0/"]
)
def test_redirects_to_metadata_addresses_are_refused(tmp_path, http_server, target):
    base, _ = http_server
    spec = write_spec(tmp_path, http_spec([f"{base}/redirect?to={target}"]))
    result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"), timeout=30)
    assert result.code == 2 and "is denied to HTTP sources" in result.report["error"]
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


@pytest.mark.timeout(90)
def test_a_stalled_sql_query_exits_retryably_at_the_deadline(tmp_path, sqlite_db):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT 'text' AS body FROM c WHERE x < 0"
    spec = write_spec(tmp_path, sql_spec(endless))
    env = {"LLMTRAIN_SECRETS_DIR": str(sqlite_db), "LLMTRAIN_READ_DEADLINE_SECONDS": "2"}
    result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"), env=env, timeout=60)
    assert result.code == 75, result.stderr
    assert "Secret db/url: the rows did not arrive within the deadline of 2 s" in result.report["error"]
    assert not (tmp_path / "out/manifest.json").exists()


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


# --- addresses, truncated bodies, deadlines -----------------------------------------------------------


@contextlib.contextmanager
def serving(respond, host="127.0.0.1", port=0):
    """A server on `host` whose GET handler is `respond(handler)`; yields (base URL, requests seen)."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(dict(self.headers))
            with contextlib.suppress(OSError):
                respond(self)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def send(handler, body: bytes, status: int = 200, **headers: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def read_url(url: str, **http) -> bytes:
    source = HttpSource.model_validate({"urls": [url], **http})
    with open_url(source, url) as body:
        return body.read()


@pytest.fixture
def cluster_policy(monkeypatch):
    """The chart's default: loopback and private networks denied, as in a cluster."""
    monkeypatch.setenv(netpolicy.DENIED_ENV, ",".join(netpolicy.CLUSTER_DENIED))


def test_dns_rebinding_reaches_only_the_checked_address(monkeypatch):
    """The name resolves to an allowed address when checked and to a denied one afterwards."""
    monkeypatch.setenv(netpolicy.DENIED_ENV, "127.0.0.1/32")
    real = socket.getaddrinfo
    answers = iter(["127.0.0.2"])

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            return real(next(answers, "127.0.0.1"), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with serving(lambda h: send(h, b"the public document"), host="127.0.0.2") as (good, _):
        port = int(good.rsplit(":", 1)[1])
        with serving(lambda h: send(h, b"the internal secret"), port=port) as (_, secret_seen):
            assert read_url(f"http://rebind.test:{port}/doc") == b"the public document"
            with pytest.raises(SourceError, match=r"127\.0\.0\.1/32 is denied"):  # a second connection resolves anew
                read_url(f"http://rebind.test:{port}/doc")
    assert secret_seen == []


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f.1", "0177.0.0.1", "0x7f000001", "127.1", "localhost", "[::ffff:127.0.0.1]", "[::127.0.0.1]"],
)
def test_every_spelling_of_loopback_is_refused_under_the_cluster_policy(cluster_policy, monkeypatch, host):
    monkeypatch.setenv(netpolicy.ALLOWED_ENV, "127.0.0.2/32")  # the redirector's address only
    with serving(lambda h: send(h, b"internal")) as (base, seen):
        target = f"http://{host}:{base.rsplit(':', 1)[1]}/x"
        with pytest.raises(SourceError, match="is denied to HTTP sources"):
            read_url(target)
        redirect = serving(lambda h: send(h, b"", 302, Location=target), host="127.0.0.2")
        with redirect as (redirector, hops), pytest.raises(SourceError, match="is denied to HTTP sources"):
            read_url(f"{redirector}/go")  # also as a redirect's target
    assert seen == [] and len(hops) == 1


def test_the_operators_allow_list_admits_a_denied_network(cluster_policy, monkeypatch):
    with serving(lambda h: send(h, b"mirror")) as (base, _):
        with pytest.raises(SourceError, match=r"127\.0\.0\.0/8 is denied"):
            read_url(f"{base}/x")
        monkeypatch.setenv(netpolicy.ALLOWED_ENV, "127.0.0.1/32")
        assert read_url(f"{base}/x") == b"mirror"


def short_body(handler):
    """Promises 5000 bytes, sends 120, closes."""
    handler.send_response(200)
    handler.send_header("Content-Length", "5000")
    handler.end_headers()
    handler.wfile.write(PLAYS[0].read_bytes()[:120])


def bad_chunks(handler):
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.write(b"10\r\n" + PLAYS[0].read_bytes()[:16] + b"\r\nZZ\r\nnot a chunk\r\n")


@pytest.mark.parametrize("respond", [short_body, bad_chunks], ids=["short-content-length", "bad-chunked"])
def test_a_truncated_body_fails_retryably_and_is_not_kept(tmp_path, respond):
    with serving(respond) as (base, _):
        spec = write_spec(tmp_path, http_spec([f"{base}/doc.txt"]))
        result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"), timeout=60)
    assert result.code == 75, result.stderr
    assert f"{base}/doc.txt" in result.report["error"] and "not keeping a truncated document" in result.report["error"]
    assert not (tmp_path / "out/manifest.json").exists()


def test_a_truncated_body_is_resumed_with_a_range_request():
    body = PLAYS[1].read_bytes()

    def resumable(handler):
        wanted = handler.headers.get("Range")
        if wanted is None:  # the first answer breaks off halfway
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("ETag", '"v1"')
            handler.send_header("Accept-Ranges", "bytes")
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            return
        assert handler.headers.get("If-Range") == '"v1"'
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        send(handler, body[start:], 206, Content_Range=f"bytes {start}-{len(body) - 1}/{len(body)}")

    with serving(resumable) as (base, seen):
        assert read_url(f"{base}/play.txt") == body
    assert [h.get("Range") for h in seen] == [None, f"bytes={len(body) // 2}-"]


def drip(handler, stop: threading.Event, headers: bool):
    """One byte every 0.3 s, in the headers or in the body: no socket timeout ever trips."""
    handler.wfile.write(b"HTTP/1.0 200 OK\r\n")
    if headers:
        while not stop.wait(0.3):
            handler.wfile.write(b"X")
            handler.wfile.flush()
    handler.wfile.write(b"Content-Length: 100000\r\n\r\n")
    while not stop.wait(0.3):
        handler.wfile.write(b"x")
        handler.wfile.flush()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_dripping_server_hits_the_deadline(tmp_path, headers):
    stop = threading.Event()
    try:
        with serving(lambda h: drip(h, stop, headers)) as (base, _):
            spec = write_spec(tmp_path, http_spec([f"{base}/slow.txt"]))
            env = {"LLMTRAIN_READ_DEADLINE_SECONDS": "2"}
            result = run_ingest("-f", str(spec), "--output", str(tmp_path / "out"), env=env, timeout=60)
    finally:
        stop.set()
    assert result.code == 75, result.stderr
    assert f"{base}/slow.txt: not read completely within the deadline of 2 s" in result.report["error"]


@pytest.mark.timeout(60)
def test_a_dripping_or_truncated_s3_object_fails_retryably(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("LLMTRAIN_READ_DEADLINE_SECONDS", "2")
    stop = threading.Event()
    cases = [(lambda h: drip(h, stop, False), "deadline of 2 s"), (short_body, "broke off")]
    try:
        for respond, message in cases:
            with serving(respond) as (base, _):
                source = S3Source.model_validate({"bucket": "corpus", "endpoint": base})
                opened = s3.open_object(source, "s3://corpus/doc.txt")
                with pytest.raises(SourceError, match=message) as caught, opened as body:
                    body.read()
            assert caught.value.retryable and "s3://corpus/doc.txt" in str(caught.value)
    finally:
        stop.set()

"""No secret value leaks. The operator stores outputs on S3 (SeaweedFS; the keys reach pods from a Secret as
`envFrom`) and the DataSource reads HTTP with an Authorization header from a Secret (a mounted file).
After the run, every place a value could surface is searched: pod logs and termination messages, Events,
every status, every ConfigMap, Job and Pod (command, args, env), the operator's own log records."""

from __future__ import annotations

import base64
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.cluster import NAMESPACE, small_run
from support.paths import ROOT
from support.seaweed import run_seaweed

pytestmark = pytest.mark.emulated  # reads the executor's pod directories
TOKEN = "Bearer tok-9f8e7d6c5b4a3210"
PLAYS = sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))
KINDS = ("Event", "ConfigMap", "Job", "Pod", "Service", "ServiceAccount", "Role", "RoleBinding")


@pytest.fixture(scope="module")
def s3():
    yield from run_seaweed()


@pytest.fixture
def web():
    """Serves the plays only to requests carrying TOKEN."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = ROOT / "examples/data/shakespeare" / self.path.strip("/")
            if self.headers.get("Authorization") != TOKEN or not path.is_file():
                self.send_response(401 if path.is_file() else 404)
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def secret(name: str, data: dict[str, str]) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "data": encoded}


def test_secret_values_appear_nowhere(cluster, s3, web, caplog):
    caplog.set_level(logging.INFO)
    s3.client().create_bucket(Bucket="models")
    cluster.store.create(
        secret("llmtrain-storage", {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key})
    )
    cluster.store.create(secret("web", {"authorization": TOKEN}))
    cluster.start_operator(
        storage_root="s3://models/llmtrain", storage_secret="llmtrain-storage", s3_endpoint=s3.endpoint
    )
    documents = small_run()
    urls = [f"{web}/{p.name}" for p in PLAYS]
    documents[0]["spec"]["sources"] = [{"http": {"urls": urls, "authSecret": {"name": "web", "key": "authorization"}}}]
    del documents[0]["spec"]["output"]["uri"], documents[1]["spec"]["checkpointing"]["uri"]
    del documents[2]["spec"]["output"]  # every output to the operator's S3 storage root
    cluster.apply(documents)
    cluster.wait_phase("ModelExport", "tiny-llama-export", "Succeeded", 400)
    run = cluster.get("TrainingRun", "tiny-llama")["status"]
    assert run["latestCheckpoint"]["uri"].startswith("s3://models/llmtrain/")
    assert s3.client().list_objects_v2(Bucket="models", Prefix="llmtrain/")["KeyCount"] > 0

    places: dict[str, str] = {}
    for path in sorted((cluster.root / "pods").rglob("*")):
        if path.is_file() and "secrets" not in path.relative_to(cluster.root).parts:  # the mounted files
            places[str(path.relative_to(cluster.root))] = path.read_text(errors="replace")
    for kind in (*KINDS, "DataSource", "TrainingRun", "ModelExport"):
        for obj in cluster.store.list(kind, NAMESPACE):
            places[f"{kind}/{obj['metadata']['name']}"] = json.dumps(obj)
    places["operator and test logs"] = caplog.text
    # the search looks where the values would be: logs, reports, specs that reference the Secrets
    everything = "\n".join(places.values())
    assert "CheckpointSaved" in everything and '"secretRef": {"name": "llmtrain-storage"' in everything
    assert any(name.endswith("/log") for name in places) and any(n.startswith("Pod/") for n in places)
    for value in (s3.secret_key, TOKEN, TOKEN.split()[1]):
        leaks = [name for name, text in places.items() if value in text]
        assert not leaks, f"{value[:6]}... found in {leaks}"

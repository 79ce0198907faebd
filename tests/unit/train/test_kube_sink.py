"""The trainer's progress writes survive a busy API server: 5xx, 409 and 429 are retried, refusals are not."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from llmtrain.train import kube_sink
from llmtrain.train.kube_sink import ConfigMapSink


@pytest.fixture
def server(monkeypatch):
    """An API server that answers each PATCH with the next status of `answers` (then 200)."""
    answers: list[int] = []
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PATCH(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            code = answers.pop(0) if answers else 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("LLMTRAIN_KUBE_API", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setattr(kube_sink, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    yield answers, received
    httpd.shutdown()


def test_a_final_report_lands_through_server_errors(server):
    answers, received = server
    answers += [500, 409, 429]
    ConfigMapSink("configmap://team-a/run-progress").write({"version": 1, "step": 40, "phase": "Succeeded"})
    assert len(received) == 4 and json.loads(received[-1]["data"]["progress.json"])["step"] == 40


def test_a_refusal_is_not_retried_and_errors_give_up_in_bounded_time(server):
    answers, received = server
    answers += [403]
    with pytest.raises(OSError, match="403"):
        ConfigMapSink("configmap://team-a/run-progress").write({"version": 1})
    assert len(received) == 1
    answers += [500] * 4
    with pytest.raises(OSError, match="500"):
        ConfigMapSink("configmap://team-a/run-progress").write({"version": 1})
    assert len(received) == 5

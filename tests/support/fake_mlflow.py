"""A tiny in-memory MLflow tracking server (the REST endpoints the trainer calls), with injected failures."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/api/2.0/mlflow/"


class FakeMlflow:
    def __init__(self) -> None:
        self.experiments: dict[str, str] = {}  # name -> id
        self.runs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (endpoint, Authorization, body or query)
        self.failures: dict[str, list[int]] = {}  # endpoint -> statuses to answer first, in order
        self.delay = 0.0  # seconds every answer waits (a slow server)
        self.garbled: set[str] = set()  # endpoints answering 200 with a body that is not MLflow's
        self.redirect_to: str | None = None  # every call answered 302 to this base URI
        self.padding = 0  # bytes of whitespace before every answer's JSON (an oversized answer)
        self.lock = threading.Lock()

    def fail(self, endpoint: str, *statuses: int) -> None:
        self.failures.setdefault(endpoint, []).extend(statuses)

    def metrics(self, run_id: str, key: str) -> list[tuple[int, Any]]:
        return [(m["step"], m["value"]) for m in self.runs[run_id]["metrics"] if m["key"] == key]

    def handle(self, method: str, endpoint: str, body: dict[str, Any], auth: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append((endpoint, auth, body))
            if endpoint in self.garbled:
                return 200, {"unexpected": True}
            queued = self.failures.get(endpoint)
            if queued:
                status = queued.pop(0)
                return status, {
                    "error_code": "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST",
                    "message": "injected",
                }
            return self._answer(endpoint, body)

    def _answer(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        missing = (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"})
        if endpoint == "experiments/get-by-name":
            name = body["experiment_name"]
            if name not in self.experiments:
                return missing
            return 200, {"experiment": {"experiment_id": self.experiments[name], "name": name}}
        if endpoint == "experiments/create":
            if body["name"] in self.experiments:
                return 400, {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "exists"}
            self.experiments[body["name"]] = str(len(self.experiments) + 1)
            return 200, {"experiment_id": self.experiments[body["name"]]}
        if endpoint == "runs/create":
            run_id = uuid.uuid4().hex
            self.runs[run_id] = {"info": {"run_id": run_id, "status": "RUNNING", **body}, "metrics": [], "params": {}}
            return 200, {"run": {"info": {"run_id": run_id}}}
        run = self.runs.get(body.get("run_id", ""))
        if run is None:
            return missing
        if endpoint == "runs/get":
            params = [{"key": k, "value": v} for k, v in run["params"].items()]
            return 200, {"run": {"info": {**run["info"], "lifecycle_stage": "active"}, "data": {"params": params}}}
        if endpoint == "runs/log-batch":
            for param in body.get("params", []):
                if run["params"].get(param["key"], param["value"]) != param["value"]:
                    return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values"}
                run["params"][param["key"]] = param["value"]
            run["metrics"] += body.get("metrics", [])
            return 200, {}
        if endpoint == "runs/update":
            run["info"]["status"] = body["status"]
            return 200, {"run_info": run["info"]}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": endpoint}


@contextmanager
def serve(fake: FakeMlflow) -> Iterator[str]:
    """The fake on 127.0.0.1 (a free port); yields its base URI."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            url = urlparse(self.path)
            if fake.delay:
                threading.Event().wait(fake.delay)
            if method == "GET":
                body = {k: v[0] for k, v in parse_qs(url.query).items()}
            else:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if fake.redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", fake.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, answer = fake.handle(method, url.path.removeprefix(PREFIX), body, self.headers.get("Authorization"))
            data = b" " * fake.padding + json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

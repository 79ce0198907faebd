"""The fault proxy in front of the real API server (tests/support/fault_proxy.py), which the operator fault
drill uses there (`bench/operator_faults.py --api real`): requests pass through, watches stream, and each
fault it claims to inject is injected."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from support.fault_proxy import FaultProxy
from support.real_cluster import ControlPlane, default_bin_dir, missing_binaries

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    missing = missing_binaries(default_bin_dir())
    if missing:
        pytest.skip(f"SKIPPED: no {', '.join(missing)} in {default_bin_dir()}: run `make cluster-bins` first")
    cp = ControlPlane(default_bin_dir(), tmp_path_factory.mktemp("proxy-cluster"))
    try:
        cp.start()
        cp.wait_ready(90)
        pki = cp.pki
        proxy = FaultProxy(cp.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key", seed=1).start()
        yield proxy
        proxy.stop()
    finally:
        cp.stop()


def call(proxy: FaultProxy, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(proxy.url + path, data, {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


def test_requests_pass_through_with_the_proxys_credentials(proxy):
    status, made = call(proxy, "POST", "/api/v1/namespaces/default/configmaps", configmap("through"))
    assert status == 201 and made["metadata"]["uid"]
    status, found = call(proxy, "GET", "/api/v1/namespaces/default/configmaps/through")
    assert status == 200 and found["data"] == {"k": "v"}


def test_conflicts_errors_and_latency_are_injected(proxy):
    proxy.faults.conflict_rate = 1.0
    status, body = call(proxy, "POST", "/api/v1/namespaces/default/configmaps", configmap("refused"))
    assert status == 409 and body["reason"] == "Conflict"
    assert call(proxy, "GET", "/api/v1/namespaces/default/configmaps")[0] == 200  # reads are never conflicts
    proxy.faults.conflict_rate, proxy.faults.error_rate = 0.0, 1.0
    assert call(proxy, "GET", "/api/v1/namespaces/default/configmaps")[0] == 500
    proxy.faults.error_rate, proxy.faults.latency = 0.0, 0.3
    started = time.monotonic()
    assert call(proxy, "GET", "/api/v1/namespaces/default/configmaps/through")[0] == 200
    assert time.monotonic() - started >= 0.3
    proxy.faults.latency = 0.0
    assert call(proxy, "GET", "/api/v1/namespaces/default/configmaps/refused")[0] == 404  # never created


def test_watches_stream_and_are_cut(proxy):
    url = proxy.url + "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=60"
    events: list[dict] = []
    ended = threading.Event()

    def watch() -> None:
        try:
            with urllib.request.urlopen(url, timeout=70) as response:
                for line in response:
                    events.append(json.loads(line))
        except OSError:  # a cut stream may end as a reset connection
            pass
        finally:
            ended.set()

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(1.0)
    call(proxy, "POST", "/api/v1/namespaces/default/configmaps", configmap("watched"))
    deadline = time.monotonic() + 10
    while not any(e["object"]["metadata"]["name"] == "watched" for e in events) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "watched" for e in events)
    proxy.cut_watches()
    assert ended.wait(10), "the watch stream outlived cut_watches()"

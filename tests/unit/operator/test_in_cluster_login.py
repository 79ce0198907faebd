"""The operator reaches the API server where the kubelet says it is ($KUBERNETES_SERVICE_HOST/_PORT), not at
kopf's fixed https://kubernetes.default.svc (found on the real control plane: a crash loop)."""

from __future__ import annotations

import kopf
import pytest

from llmtrain_operator.operator import in_cluster_login


@pytest.fixture
def service_account(monkeypatch):
    info = kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="t", default_namespace="ns")
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: info)
    return info


@pytest.mark.parametrize(
    ("host", "port", "server"),
    [
        ("10.96.0.1", "443", "https://10.96.0.1:443"),
        ("127.0.0.1", "6443", "https://127.0.0.1:6443"),
        ("fd00::1", "443", "https://[fd00::1]:443"),
    ],
)
def test_service_address_from_the_environment(service_account, monkeypatch, host, port, server):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    info = in_cluster_login(settings=kopf.OperatorSettings())
    assert info.server == server and info.token == "t" and info.default_namespace == "ns"


def test_without_the_variables_kopf_default_stays(service_account, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert in_cluster_login(settings=kopf.OperatorSettings()).server == "https://kubernetes.default.svc"


def test_outside_a_pod_nothing(monkeypatch):
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert in_cluster_login(settings=kopf.OperatorSettings()) is None

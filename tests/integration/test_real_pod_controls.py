"""spec.pod on the real control plane (tests/support/real_cluster.py, two node agents): the real API server
admits the pod controls of a DataSource's Job, the real scheduler refuses an affinity no node satisfies and
the status carries its words, and a PriorityClass that does not exist, which makes the real Job controller's
pod creations fail (FailedCreate Events only: no Job condition says so), is reported as PriorityClassNotFound.

The operator's shell is the `Reconciler` over a `KubeStore` with admin credentials (no kopf, no cache: the
events and the manifests are what is tested). Needs `make cluster-bins` and `make tools`, and root (the node
agents); skipped (loudly) without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from llmtrain.control.reconciler import Reconciler
from llmtrain.core import Context
from llmtrain_operator.kubestore import ApiError, Connection, KubeStore
from support.paths import ROOT
from support.real_cluster import ControlPlane, default_bin_dir, missing_binaries
from support.real_deploy import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

NAMESPACE = "team-a"
#: s3 storage and an s3 source: no PVC, whose absence the scheduler would report before any affinity
CONTEXT = Context(storage_root="s3://models/llmtrain")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStore]:
    missing = missing_binaries(default_bin_dir())
    if missing:
        pytest.skip(f"SKIPPED: no {', '.join(missing)} in {default_bin_dir()}: run `make cluster-bins` first")
    if os.geteuid() != 0:
        pytest.skip("SKIPPED: the node agents run pods in mount namespaces, which needs root")
    if not os.access(ROOT / ".tools" / "bin" / "kubectl", os.X_OK):
        pytest.skip("SKIPPED: no .tools/bin/kubectl: run `make tools` first")
    cp = ControlPlane(default_bin_dir(), tmp_path_factory.mktemp("pod-controls"), nodes=2, capacity="cpu=4,memory=8Gi")
    try:
        cp.start()
        print(f"control plane and 2 node agents ready in {cp.wait_ready(120):.1f} s")
        cp.prepare_namespace(NAMESPACE)
        pki = cp.pki
        yield KubeStore(
            Connection(
                cp.server,
                ca_path=str(pki / "ca.crt"),
                cert_path=str(pki / "admin.crt"),
                key_path=str(pki / "admin.key"),
            )
        )
    finally:
        cp.stop()


def data_source(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"sources": [{"s3": {"bucket": "corpora", "prefix": "books/"}}], "pod": pod},
    }


def status_once_reconciled(store: KubeStore, name: str, words: str, timeout: float = 90) -> dict[str, Any]:
    """Reconcile the DataSource (as the operator's work queue would) until its status message has `words`."""
    reconciler = Reconciler(store, CONTEXT)

    def reached() -> dict[str, Any] | None:
        reconciler.reconcile("DataSource", NAMESPACE, name)
        status = store.get("DataSource", NAMESPACE, name).get("status") or {}
        return status if words in (status.get("message") or "") else None

    status = eventually(f"DataSource {name}'s status saying {words!r}", reached, timeout, interval=1.0)
    print(f"{name}: {status['message']}")
    return status


def test_an_affinity_no_node_satisfies_shows_the_schedulers_reason(store):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu-model", "operator": "In", "values": ["h100"]}]}
                ]
            }
        }
    }
    controls = {
        "affinity": affinity,
        "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
        "labels": {"team": "nlp"},
        "annotations": {"scheduling.k8s.io/group-name": "corpus"},
        "extraResources": {"rdma/ib": 1},
        "shmSize": "1Gi",
    }
    store.create(data_source("nowhere", controls))
    status = status_once_reconciled(store, "nowhere", "didn't match Pod's node affinity/selector")
    assert status["phase"] == "Pending"
    assert "0/2 nodes are available" in status["message"]  # the real scheduler's words
    assert "spec.pod.affinity.nodeAffinity" in status["message"]  # and the field to fix
    (job,) = [j for j in store.list("Job", NAMESPACE) if j["metadata"]["name"] == "nowhere-ingest"]
    template = job["spec"]["template"]
    assert template["spec"]["affinity"] == affinity and template["metadata"]["labels"]["team"] == "nlp"


def test_a_missing_priority_class_is_reported_with_the_field_and_the_fix(store):
    store.create(data_source("unranked", {"priorityClassName": "no-such-class"}))
    status = status_once_reconciled(store, "unranked", "PriorityClass no-such-class")
    running = next(c for c in status["conditions"] if c["type"] == "Running")
    assert running["reason"] == "PriorityClassNotFound"
    assert "spec.pod.priorityClassName" in status["message"] and "create it" in status["message"]
    pods = store.list("Pod", NAMESPACE, {"batch.kubernetes.io/job-name": "unranked-ingest"})
    assert pods == []  # the API server refused every pod


REFUSED = [
    ({"labels": {"llmtrain.dev/datasource": "other"}}, "must not set labels the operator or the Job controller own"),
    ({"labels": {"-bad key": "x"}}, "keys must be label keys"),
    ({"env": [{"name": "MASTER_ADDR", "value": "10.0.0.1"}]}, "is set by the operator (the workload contract"),
    ({"extraResources": {"memory": 1}}, "keys must be extended resource names"),
]


@pytest.mark.parametrize(("controls", "words"), REFUSED, ids=["owned-label", "bad-label-key", "torchrun-env", "memory"])
def test_the_real_api_server_refuses_what_the_models_refuse(store, controls, words):
    with pytest.raises(ApiError) as caught:
        store.create(data_source("refused", controls))
    assert caught.value.status == 422 and words in str(caught.value)

"""Two clusters for the same integration tests.

`Cluster`: the real operator (kopf, over HTTP) against the emulated API server, with the local Job
executor playing the Job controller and kubelet (its pods' processes reach the same API server).
`RealCluster`: a real cluster from a kubeconfig (`make e2e-kind`), where `make deploy` installed the chart
and the corpus; the operator and the pods run there. Tests that need the emulation (fault injection,
killing a pod's process, restarting the operator, recorded API calls) carry the `emulated` marker and
are skipped against a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from llmtrain.local.executor import Executor
from llmtrain_operator.kubestore import Connection, KubeStore
from llmtrain_operator.operator import Operator
from llmtrain_operator.settings import Settings
from support.kube_api import ServerThread
from support.paths import ROOT

NAMESPACE = "team-a"
GROUP = ("llmtrain.dev", "v1alpha1", NAMESPACE)
KINDS = ("ModelExport", "TrainingRun", "DataSource")
#: the environment variable that points the integration tests at a real cluster
E2E_KUBECONFIG = "LLMTRAIN_E2E_KUBECONFIG"


class Harness:
    """What the tests use on either cluster: a client, a store, kubectl-like helpers."""

    #: where the cluster's PVCs are visible as directories (`<volumes>/<claim>/...`); None on a real cluster
    volumes: Path | None = None
    #: waits are multiplied by this (a real cluster starts pods more slowly)
    time_scale: float = 1.0
    client: kubernetes.client.ApiClient
    custom: kubernetes.client.CustomObjectsApi
    store: KubeStore

    def apply(self, documents: list[dict[str, Any]]) -> None:
        for document in documents:
            plural = document["kind"].lower() + "s"
            self.custom.create_namespaced_custom_object(*GROUP, plural, document)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.store.get(kind, NAMESPACE, name) or {}

    def names(self, kind: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.store.list(kind, NAMESPACE))

    def wait(self, what: Callable[[], Any], timeout: float, message: str = "") -> Any:
        timeout *= self.time_scale
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s: {message}")

    def wait_phase(self, kind: str, name: str, phase: str, timeout: float) -> dict[str, Any]:
        def reached():
            status = self.get(kind, name).get("status") or {}
            if status.get("phase") == "Failed" and phase != "Failed":
                raise AssertionError(f"{kind}/{name} failed: {status.get('message')}")
            return status if status.get("phase") == phase else None

        return self.wait(reached, timeout, f"{kind}/{name} never reached {phase}: {self.get(kind, name).get('status')}")


class Cluster(Harness):
    """The emulated API server, a client, the executor and the operator, each stoppable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.volumes = root / "volumes"
        self.api = ServerThread().start()
        config = kubernetes.client.Configuration()
        config.host = self.api.url
        self.client = kubernetes.client.ApiClient(config)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.store = KubeStore(self.api.url, component="test-client")
        self.executor = Executor(
            KubeStore(self.api.url, component="test-kubelet"), root, NAMESPACE, kube_api=self.api.url
        )
        self._executor_stop = threading.Event()
        self._executor_thread = threading.Thread(target=self._execute, name="executor", daemon=True)
        self._executor_thread.start()
        self.operator: Operator | None = None
        self._operator_stop: threading.Event | None = None
        self._operator_thread: threading.Thread | None = None

    def _execute(self) -> None:
        while not self._executor_stop.wait(0.2):
            # the API may be faulty on purpose; the next pass retries
            with contextlib.suppress(LookupError, RuntimeError):
                self.executor.sync()

    def start_operator(self, **overrides: Any) -> Operator:
        options = {
            "api_url": self.api.url,
            "namespaces": (NAMESPACE,),
            "status_interval": 1.0,
            "resync_seconds": 60.0,  # events drive the tests; resync is only a safety net
            "metrics_port": None,
            # the tests' HTTP sources serve from 127.0.0.1, which the operator's default policy denies to
            # ingest pods: this cluster's administrator allows it, as the chart's ingest.httpSources would
            "http_allowed_cidrs": ("127.0.0.0/8",),
        }
        settings = Settings(**{**options, **overrides})
        self.operator = Operator(settings)
        self._operator_stop = threading.Event()
        operator, stop = self.operator, self._operator_stop
        self._operator_thread = threading.Thread(
            target=lambda: asyncio.run(operator.run(stop_flag=stop)), name="operator", daemon=True
        )
        self._operator_thread.start()
        return operator

    def stop_operator(self) -> None:
        if self._operator_stop is not None:
            self._operator_stop.set()
            self._operator_thread.join(30)
            self._operator_stop = None

    def close(self) -> None:
        self.stop_operator()
        self._executor_stop.set()
        self._executor_thread.join(30)
        self.executor.shutdown(wait=True)
        self.api.stop()


class RealCluster(Harness):
    """A real cluster (kind, or any other) where the chart is installed and the corpus PVC is filled."""

    time_scale = 3.0

    def __init__(self, kubeconfig: str) -> None:
        import kopf

        self.client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's login reads it
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        self.store = KubeStore(Connection.from_kopf(info), component="test-client")
        self.applied: list[tuple[str, str]] = []

    def start_operator(self, **overrides: Any) -> None:
        """The deployed operator is already running (`make deploy`); its settings are the chart's."""
        assert not overrides, "a real cluster runs the operator the chart configured"

    def apply(self, documents: list[dict[str, Any]]) -> None:
        super().apply(documents)
        self.applied += [(d["kind"], d["metadata"]["name"]) for d in documents]

    def close(self) -> None:
        """Delete what the test applied and wait until the garbage collector has removed every pod."""
        for kind, name in self.applied:
            with contextlib.suppress(kubernetes.client.ApiException):
                self.custom.delete_namespaced_custom_object(*GROUP, kind.lower() + "s", name)
        owned = ("Job", "Pod", "Service", *KINDS)
        self.wait(lambda: not any(self.names(kind) for kind in owned), 60, "the test's objects were not deleted")


def small_run(formats: list[str] | None = None, steps: int = 30, workers: int = 1) -> list[dict[str, Any]]:
    """The example run, shrunk to seconds, reading the corpus from a PVC (local paths are refused in a cluster);
    `workers` > 1 ingests in stages, one Job each."""
    documents = list(yaml.safe_load_all((ROOT / "examples" / "run.yaml").read_text()))
    documents = copy.deepcopy(documents)
    documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "shakespeare/*.txt"}}]
    documents[0]["spec"]["workers"] = workers
    spec = documents[1]["spec"]
    spec["model"].update(layers=2, hiddenSize=64, heads=4, kvHeads=2, intermediateSize=192, maxSeqLen=64)
    spec["training"].update(maxSteps=steps, microBatchSize=4)
    spec["training"]["scheduler"]["warmupSteps"] = 3
    spec["validation"] = {"everySteps": 10, "batches": 2}
    spec["checkpointing"] = {"everySteps": 5, "keepLast": 2, "keepBest": 1}
    documents[2]["spec"]["formats"] = formats or ["safetensors"]
    documents[2]["spec"]["quantization"] = "none"
    # outputs under a fresh prefix: on a real cluster the storage PVC outlives each test
    prefix = f"pvc://llmtrain-storage/e2e-{uuid.uuid4().hex[:8]}"
    documents[0]["spec"]["output"]["uri"] = f"{prefix}/data"
    spec["checkpointing"]["uri"] = f"{prefix}/checkpoints"
    documents[2]["spec"].setdefault("output", {})["uri"] = f"{prefix}/export"
    return documents

"""The operator shell: watch the three kinds and their children, reconcile through the shared core.

What kopf does here: log in (service account or kubeconfig), run the watches and deliver their event
stream to `kopf.on.event` handlers, call our startup and cleanup hooks, and serve the liveness endpoint.
What it does not: no kopf handlers with retries, finalizers or annotations on our resources (so deleting
a resource never waits for the operator), no kopf timers or daemons, no kopf Event posting.

The scheduling is ours, in one place, as controller-runtime's: every reason to look at a resource puts
its key on one de-duplicating work queue (`workqueue.WorkQueue`), and `workers` threads reconcile from
it, each pass re-deriving everything from the world (level-based). The reasons:
- an event on a resource or on any child it owns (so drift on a child is corrected at once); every
  event first updates the watch cache that answers the reads of a reconcile (`cache.WatchCache`);
- a DataSource's or TrainingRun's transition, for the resources that wait on it;
- a failed pass: added again after 0.5 s, doubling to 30 s (the rate-limited requeue);
- the plan's `requeue_after`: when the core wants to look again without an event (Stalled,
  pendingTimeoutSeconds, a status write the throttle held back);
- the resync every `resync_seconds`, which re-lists the cache and enqueues every resource: the safety
  net for missed events (controller-runtime's SyncPeriod).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from typing import Any

import kopf

from llmtrain.api import KINDS
from llmtrain.api.common import GROUP, VERSION
from llmtrain.control import Reconciler
from llmtrain.core import Plan, naming
from llmtrain.core.reconcile import dependency_keys

from .cache import WatchCache
from .kubestore import Connection, KubeStore
from .metrics import Metrics
from .settings import Settings
from .workqueue import WorkQueue

log = logging.getLogger("llmtrain.operator")
KIND_LABELS = {naming.kind_label(kind.KIND): kind.KIND for kind in KINDS}
MANAGED = {"app.kubernetes.io/managed-by": naming.MANAGED_BY}
#: the children the operator creates: (API group, version, plural) -> kind; all watched, all cached
CHILDREN = {
    ("batch", "v1", "jobs"): "Job",
    ("", "v1", "pods"): "Pod",
    ("", "v1", "configmaps"): "ConfigMap",
    ("", "v1", "services"): "Service",
    ("", "v1", "serviceaccounts"): "ServiceAccount",
    ("rbac.authorization.k8s.io", "v1", "roles"): "Role",
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): "RoleBinding",
}
CACHED: dict[str, dict[str, str] | None] = {kind.KIND: None for kind in KINDS} | dict.fromkeys(
    CHILDREN.values(), MANAGED
)


def in_cluster_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's service-account login, at the address the kubelet gives every pod ($KUBERNETES_SERVICE_HOST and
    _PORT, as client-go's in-cluster config reads it) rather than kopf's fixed `https://kubernetes.default.svc`,
    which needs the cluster DNS (a pod on the host network with dnsPolicy Default has none). Found on the real
    control plane, whose pods reach the API server only at the address in those variables."""
    info = kopf.login_with_service_account(**kwargs)
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if info is None or not host or not port:
        return info
    host = f"[{host}]" if ":" in host else host
    return dataclasses.replace(info, server=f"https://{host}:{port}")


def connection(settings: Settings) -> Connection:
    """Where the operator's own calls go: an explicit URL, else kopf's service-account or kubeconfig login."""
    if settings.api_url:
        return Connection(settings.api_url.rstrip("/"))
    info = in_cluster_login(settings=kopf.OperatorSettings()) or kopf.login_with_kubeconfig(
        settings=kopf.OperatorSettings()
    )
    if info is None:
        raise kopf.PermanentError(
            "no Kubernetes API: not in a cluster, no usable kubeconfig, and LLMTRAIN_KUBE_API is unset"
        )
    return Connection.from_kopf(info)


class Operator:
    """One operator instance: its registry, store, reconciler and metrics (tests run several in turn)."""

    def __init__(self, settings: Settings, store: KubeStore | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.api = store or KubeStore(connection(settings), pool=settings.workers + 4)
        self.store = WatchCache(self.api, CACHED, settings.namespaces, on_recovered=self._enqueue_owner)
        self.reconciler = Reconciler(self.store, settings.context(), on_plan=self._observed)
        self.registry = kopf.OperatorRegistry()
        self._stop = threading.Event()
        self.queue = WorkQueue()  # events only enqueue keys; `workers` threads reconcile them
        self._failures: dict[tuple[str, str, str], int] = {}  # consecutive failed passes per resource
        self.metrics.queue_depth.set_function(lambda: len(self.queue))
        for kind in CACHED:
            self.metrics.cached.labels(kind).set_function(lambda kind=kind: self.store.size()[kind])
        self._register()

    # -- reconciling -------------------------------------------------------------------------------

    def _observed(self, body: dict[str, Any], plan: Plan, written: bool) -> None:
        self.metrics.observe(body, plan.status)
        if written:
            self.metrics.status_writes.labels(body["kind"]).inc()

    def reconcile(self, kind: str, namespace: str, name: str) -> Plan | None:
        started = time.perf_counter()
        self.metrics.reconciles.labels(kind).inc()
        try:
            plan = self.reconciler.reconcile(kind, namespace, name)
        except Exception:
            self.metrics.errors.labels(kind).inc()
            log.exception("reconcile failed", extra={"kind": kind, "namespace": namespace, "object": name})
            raise
        finally:
            self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        if plan is not None and plan.events:  # any kind may be depended on (spec.init: a ModelExport)
            self._enqueue_dependents(kind, namespace, name)  # only a transition (an Event) can unblock them
        return plan

    def _enqueue_dependents(self, kind: str, namespace: str, name: str) -> None:
        """A resource's change can unblock the resources whose dependencies (`dependency_keys`) name it."""
        for dependent in KINDS:
            for item in self.store.list(dependent.KIND, namespace):
                if (kind, name) in dependency_keys({"kind": dependent.KIND, **item}):
                    self.queue.add((dependent.KIND, namespace, item["metadata"]["name"]))

    def resync(self) -> None:
        """Enqueue every resource (the level-based safety net against missed events)."""
        for kind in KINDS:
            for namespace in self.settings.namespaces or (None,):
                for item in self.store.list(kind.KIND, namespace):
                    self.queue.add((kind.KIND, item["metadata"]["namespace"], item["metadata"]["name"]))

    def _resync_loop(self) -> None:
        """List every cached kind until it works (workers wait for it), then re-list and enqueue
        everything every `resync_seconds`."""
        while not self._stop.is_set() and not self.store.synced.is_set():
            try:
                self.store.relist()
            except Exception as exc:
                log.warning("initial list failed; retrying", extra={"error": str(exc)})
                self._stop.wait(1.0)
        while not self._stop.wait(self.settings.resync_seconds):
            try:
                self.store.relist()
                self.resync()
            except Exception:
                log.exception("resync pass failed")

    def _work(self) -> None:
        while not self._stop.is_set() and not self.store.synced.wait(1.0):
            pass  # no reconcile before the cache holds the world (it would see children missing)
        while not self._stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            try:
                plan = self.reconcile(*key)
            except Exception:  # counted and logged by reconcile: tried again after a growing delay
                self.queue.add_after(key, self._backoff(key))
            else:
                self._failures.pop(key, None)
                if plan is not None and plan.requeue_after is not None:
                    self.queue.add_after(key, plan.requeue_after)  # the core wants another look without an event
            finally:
                self.queue.done(key)

    def _backoff(self, key: tuple[str, str, str]) -> float:
        """controller-runtime's rate-limited requeue: 0.5 s after a failed pass, doubling to 30 s."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        return min(30.0, 0.5 * 2 ** (failures - 1))

    # -- kopf wiring -------------------------------------------------------------------------------

    def _register(self) -> None:
        registry = self.registry

        @kopf.on.startup(registry=registry)
        def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.posting.enabled = False  # the core posts one Event per transition itself
            # the watched namespaces are named, and the CRDs are installed before the operator (Helm):
            # no need to list or watch Namespaces and CRDs, so no RBAC for them either
            settings.scanning.disabled = True
            settings.execution.max_workers = self.settings.workers
            settings.watching.server_timeout = 300
            settings.watching.client_timeout = 330
            settings.networking.request_timeout = 60
            threading.Thread(target=self._resync_loop, name="resync", daemon=True).start()
            for index in range(self.settings.workers):
                threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True).start()

        @kopf.on.cleanup(registry=registry)
        def cleanup(**_: Any) -> None:
            self._stop.set()
            self.queue.close()

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            if self.settings.api_url:
                return kopf.ConnectionInfo(server=self.settings.api_url, insecure=True, default_namespace="default")
            return in_cluster_login(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

        for kind in KINDS:
            kopf.on.event(GROUP, VERSION, kind.PLURAL, registry=registry)(self._on_resource)
        for (group, version, plural), kind in CHILDREN.items():
            handler = self._child_handler(kind)
            if group:
                kopf.on.event(group, version, plural, labels=MANAGED, registry=registry)(handler)
            else:
                kopf.on.event(version, plural, labels=MANAGED, registry=registry)(handler)

    # The handlers are coroutines: they only update the cache and queue a key (microseconds, under locks
    # held as briefly), so they run on kopf's event loop instead of a hop through its thread pool.

    async def _on_resource(self, event: dict[str, Any], body: Any, **_: Any) -> None:
        meta = body["metadata"]
        self.store.observe(event.get("type"), {**event["object"], "kind": body["kind"]})
        if event.get("type") == "DELETED":
            self.metrics.forget(body["kind"], meta["namespace"], meta["name"])
            return
        self.queue.add((body["kind"], meta["namespace"], meta["name"]))

    def _child_handler(self, kind: str) -> Any:
        async def on_child(event: dict[str, Any], **_: Any) -> None:
            obj = {**event["object"], "kind": kind}
            self.store.observe(event.get("type"), obj)
            self._enqueue_owner(obj)

        return on_child

    def _enqueue_owner(self, child: dict[str, Any]) -> None:
        labels = child["metadata"].get("labels") or {}
        for label, kind in KIND_LABELS.items():
            if label in labels:
                self.queue.add((kind, child["metadata"]["namespace"], labels[label]))
                return

    # -- running -------------------------------------------------------------------------------------

    async def run(
        self,
        stop_flag: threading.Event | asyncio.Event | None = None,
        ready_flag: threading.Event | None = None,
        liveness: str | None = None,
    ) -> None:
        await kopf.operator(
            registry=self.registry,
            standalone=True,
            clusterwide=not self.settings.namespaces,
            namespaces=self.settings.namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
        self._stop.set()

"""Reads from the watches (client-go's informer cache): a reconcile makes no GET and no LIST.

Each reconcile used to read its resource, every child, its Pods and its dependencies from the API server
(about 10 requests); at 1,000 runs with a resync every 30 s that is hundreds of reads a second before any
trainer reports progress. Here every read is answered from objects the operator already receives: kopf's
watch events feed the cache (`observe`), the operator's own writes feed it with the server's answer, and a
periodic LIST of every cached kind (`relist`) replaces it, dropping what a cut watch never reported
deleted. Reads block nothing and return copies.

Ordering uses resourceVersions, which the API server draws from one counter (etcd's revision): an event
older than what is cached never overwrites it, and a deleted object is remembered (a tombstone) until a
later LIST, so a LIST taken before the deletion cannot bring it back.

Two reads remain, both rare: before a child is created its owner is read from the API server (a child
event can be handled before the owner's deletion event, and a child created for a deleted owner would be
an orphan), and a create answered 409 for an object the cache does not hold (its managed-by label was
removed, so no watch sees it) reads that object back once, so the reconcile can take it over again.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from llmtrain.control.store import Conflict, NotFound

from .kubestore import KubeStore

log = logging.getLogger("llmtrain.operator.cache")

Key = tuple[str, str]  # (namespace, name)


def _version(obj: dict[str, Any]) -> int | None:
    value = str(obj.get("metadata", {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else None


def _older(new: int | None, old: int | None) -> bool:
    """Whether `new` is known to precede `old` (unknown versions are never older: the newest arrival wins)."""
    return new is not None and old is not None and new < old


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _matches(obj: dict[str, Any], labels: dict[str, str] | None) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in (labels or {}).items())


def _slim(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """A private copy without managedFields (often half an object, never read)."""
    obj = copy.deepcopy(obj)
    obj.setdefault("kind", kind)
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


class WatchCache:
    """A `Store` whose reads come from watched objects; writes go to the API server and are cached.

    `kinds` maps each cached kind to the label selector its watch and LIST use (None: every object).
    Kinds not cached (Events, Secrets) pass through to the API server. `on_recovered` is told of an object
    a conflicting create found outside the cache (the desired object: its owner should be reconciled again).
    """

    def __init__(
        self,
        store: KubeStore,
        kinds: dict[str, dict[str, str] | None],
        namespaces: Iterable[str] = (),
        on_recovered: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.on_recovered = on_recovered
        self.kinds = dict(kinds)
        self.namespaces = tuple(namespaces)
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {kind: {} for kind in self.kinds}
        self._tombstones: dict[str, dict[Key, int]] = {kind: {} for kind in self.kinds}
        self._synced: set[str] = set()
        self._lock = threading.Lock()
        self.synced = threading.Event()  # set once every kind has been listed

    # -- feeding -------------------------------------------------------------------------------------

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
        """A watch event (kopf's `event`; type None for the objects of its initial listing)."""
        kind = obj.get("kind")
        if kind not in self.kinds:
            return
        if event_type == "DELETED":
            self._forget(kind, obj)
        else:
            self._put(kind, obj)

    def _put(self, kind: str, obj: dict[str, Any]) -> None:
        key, version = _key(obj), _version(obj)
        with self._lock:
            tombstone = self._tombstones[kind].get(key)
            if tombstone is not None and version is not None and version <= tombstone:
                return  # deleted after this version was read
            current = self._objects[kind].get(key)
            if current is not None and _older(version, _version(current)):
                return
            self._objects[kind][key] = _slim(obj, kind)

    def _forget(self, kind: str, obj: dict[str, Any]) -> None:
        key, version = _key(obj), _version(obj)
        with self._lock:
            current = self._objects[kind].get(key)
            if current is not None and _older(version, _version(current)):
                return  # an older incarnation's deletion; the cached object was created after it
            self._objects[kind].pop(key, None)
            if version is not None:
                self._tombstones[kind][key] = version

    def relist(self) -> None:
        """LIST every cached kind and replace what is cached (raises if the API server fails; the caller
        retries). After the first full pass, `synced` is set."""
        for kind, labels in self.kinds.items():
            for namespace in self.namespaces or (None,):
                items, version = self.store.list_with_version(kind, namespace, labels)
                self._replace(kind, namespace, items, version)
            with self._lock:
                self._synced.add(kind)
        self.synced.set()

    def _replace(self, kind: str, namespace: str | None, items: list[dict[str, Any]], at: int | None) -> None:
        listed = {_key(item): item for item in items}
        with self._lock:
            objects, tombstones = self._objects[kind], self._tombstones[kind]
            for key in [k for k in objects if namespace is None or k[0] == namespace]:
                if key not in listed and not _older(at, _version(objects[key])):
                    del objects[key]  # gone before the LIST (a deletion the watch missed)
            for key, item in listed.items():
                tombstone = tombstones.get(key)
                version = _version(item)
                if tombstone is not None and version is not None and version <= tombstone:
                    continue
                current = objects.get(key)
                if current is None or not _older(version, _version(current)):
                    objects[key] = _slim(item, kind)
            for key in [k for k in tombstones if namespace is None or k[0] == namespace]:
                if at is None or tombstones[key] <= at:
                    del tombstones[key]  # the LIST saw the world after this deletion

    def _cached(self, kind: str) -> bool:
        with self._lock:
            return kind in self._synced

    # -- Store: reads --------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if not self._cached(kind):
            return self.store.get(kind, namespace, name)
        with self._lock:
            found = self._objects[kind].get((namespace or "", name))
            return copy.deepcopy(found) if found is not None else None

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        if not self._cached(kind):
            return self.store.list(kind, namespace, labels)
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._objects[kind].items())
                if (namespace is None or ns == namespace) and _matches(obj, labels)
            ]

    def size(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(objects) for kind, objects in self._objects.items()}

    # -- Store: writes (the server's answer is cached) -----------------------------------------------

    def _answer(self, obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
        if isinstance(obj, dict) and obj.get("metadata", {}).get("name") and kind in self.kinds:
            self._put(kind, {**obj, "kind": kind})
        return obj

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind, meta = obj["kind"], obj["metadata"]
        self._check_owner(obj)
        try:
            return self._answer(self.store.create(obj), kind)
        except Conflict:
            if kind in self.kinds and self.get(kind, meta["namespace"], meta["name"]) is None:
                found = self.store.get(kind, meta["namespace"], meta["name"])
                if found is not None:
                    self._answer(found, kind)
                    log.info("recovered", extra={"kind": kind, "object": meta["name"], "namespace": meta["namespace"]})
                    if self.on_recovered is not None:
                        self.on_recovered(obj)
            raise

    def _check_owner(self, obj: dict[str, Any]) -> None:
        """Raise NotFound when the child's controlling owner is gone from the API server (or is being
        deleted), whatever the cache still holds; the cached owner is dropped."""
        namespace = obj["metadata"].get("namespace") or ""
        for ref in obj["metadata"].get("ownerReferences") or []:
            if not ref.get("controller") or ref.get("kind") not in self.kinds:
                continue
            live = self.store.get(ref["kind"], namespace, ref["name"])
            meta = (live or {}).get("metadata", {})
            if live is None or meta.get("uid") != ref.get("uid") or meta.get("deletionTimestamp"):
                with self._lock:
                    cached = self._objects[ref["kind"]].get((namespace, ref["name"]))
                    if cached is not None and cached["metadata"].get("uid") == ref.get("uid"):
                        del self._objects[ref["kind"]][(namespace, ref["name"])]
                raise NotFound(f"{ref['kind']} {namespace}/{ref['name']} (uid {ref.get('uid')}) is gone")

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._answer(self.store.update(obj), obj["kind"])

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._answer(self.store.patch(kind, namespace, name, patch), kind)

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._answer(self.store.patch_status(kind, namespace, name, status), kind)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.store.delete(kind, namespace, name)  # the watch reports the deletion (finalizers may delay it)

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.store.event(involved, type_, reason, message)

    def progress_sink(self, namespace: str, configmap: str) -> str | None:
        return self.store.progress_sink(namespace, configmap)

    def progress(self, namespace: str, configmap: str) -> dict[str, Any] | None:
        return self.store.progress(namespace, configmap)

"""A `Store` kept in a work directory: the local runner's API server.

Objects live in memory and are written through to `<workdir>/state/<kind>/<namespace>/<name>.json`
(atomically), so `llmtrain get` reads them and a rerun continues where the last run stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..control.store import Conflict, NotFound
from ..errors import BadInput


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _matches(obj: dict[str, Any], labels: dict[str, str] | None) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in (labels or {}).items())


class UnreadableState(BadInput):
    """A state file of the work directory that is not an object this store wrote (exit 2)."""


def _load(path: Path) -> dict[str, Any]:
    """One stored object, checked enough that loading the store cannot fail later on its shape."""
    try:
        obj = json.loads(path.read_text())
        meta = obj["metadata"]
        if not (isinstance(obj["kind"], str) and isinstance(meta["name"], str) and isinstance(meta["namespace"], str)):
            raise TypeError("kind, metadata.name and metadata.namespace must be strings")
        int(meta.get("resourceVersion", "0"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableState(
            f"{path}: not a state file of llmtrain run ({type(exc).__name__}: {exc}); move it away, or use"
            " another --workdir"
        ) from None
    return obj


class FileStore:
    def __init__(self, workdir: Path) -> None:
        self.root = Path(workdir)
        self.state = self.root / "state"
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._version = 0
        self.events: list[dict[str, Any]] = []
        for path in sorted(self.state.glob("*/*/*.json")):
            obj = _load(path)
            meta = obj["metadata"]
            self._objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
            self._version = max(self._version, int(meta.get("resourceVersion", "0")))

    # -- persistence --------------------------------------------------------------------------------

    def _path(self, kind: str, namespace: str, name: str) -> Path:
        return self.state / kind / namespace / f"{name}.json"

    def _save(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._version)
        key = (obj["kind"], meta["namespace"], meta["name"])
        self._objects[key] = obj
        path = self._path(*key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)
        return copy.deepcopy(obj)

    # -- Store --------------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._objects.get((kind, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (k, ns, _), obj in sorted(self._objects.items())
                if k == kind and (namespace is None or ns == namespace) and _matches(obj, labels)
            ]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            key = (obj["kind"], meta["namespace"], meta["name"])
            if key in self._objects:
                raise Conflict(f"{obj['kind']} {meta['name']} exists")
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if "spec" in obj:
                meta["generation"] = 1
            return self._save(obj)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            meta = obj["metadata"]
            key = (obj["kind"], meta["namespace"], meta["name"])
            old = self._objects.get(key)
            if old is None:
                raise NotFound(f"{obj['kind']} {meta['name']}")
            new = copy.deepcopy(obj)
            for field in ("uid", "creationTimestamp", "generation"):
                if field in old["metadata"]:
                    new["metadata"][field] = old["metadata"][field]
            if "status" in old and "status" not in new:
                new["status"] = old["status"]
            if old.get("spec") != new.get("spec"):
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
            return self._save(new)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            old = self._objects.get((kind, namespace, name))
            if old is None:
                raise NotFound(f"{kind} {name}")
            new = _merge(copy.deepcopy(old), {k: v for k, v in patch.items() if k != "status"})
            if old.get("spec") != new.get("spec"):
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
            return self._save(new)

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            old = self._objects.get((kind, namespace, name))
            if old is None:
                raise NotFound(f"{kind} {name}")
            new = copy.deepcopy(old)
            new["status"] = _merge(new.get("status") or {}, status)
            return self._save(new)

    def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete, and garbage-collect what it owns (as Kubernetes' background propagation does)."""
        with self._lock:
            obj = self._objects.get((kind, namespace, name))
            if obj is None:
                raise NotFound(f"{kind} {name}")
            if uid and obj["metadata"].get("uid") != uid:
                raise Conflict(f"{kind} {name} is another object now (uid {obj['metadata'].get('uid')})")
            del self._objects[(kind, namespace, name)]
            self._path(kind, namespace, name).unlink(missing_ok=True)
            uid = obj["metadata"].get("uid")
            owned = [
                key
                for key, child in self._objects.items()
                if any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences") or [])
            ]
        for key in owned:
            with contextlib.suppress(NotFound):
                self.delete(*key)

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        record = {
            "time": _now(),
            "type": type_,
            "reason": reason,
            "object": f"{involved['kind']}/{involved['metadata']['name']}",
            "message": message,
        }
        with self._lock:
            self.events.append(record)
            self.root.mkdir(parents=True, exist_ok=True)
            with (self.root / "events.jsonl").open("a") as out:
                out.write(json.dumps(record) + "\n")

    def warning_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        return []  # the local Job controller makes every pod it should: nothing refuses one

    def progress_sink(self, namespace: str, configmap: str) -> str | None:
        return str(self.root / "progress" / namespace / f"{configmap}.json")

    def progress(self, namespace: str, configmap: str) -> dict[str, Any] | None:
        path = Path(self.progress_sink(namespace, configmap) or "")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def direct(self) -> FileStore:
        return self  # no cache

"""An emulated Kubernetes API server for integration tests: kmock (pinned 0.8) plus the realism we need.

kmock serves the HTTP plumbing and API discovery (`KubernetesScaffold`); its own object handling is
too thin for an operator (see shared/notes/k8s-emulation.md), so this layer serves every resource
request itself: server-set metadata (uid, resourceVersion, creationTimestamp, generation), the
namespace from the URL, generateName, label and field selectors, resourceVersion conflicts (409),
create / PUT / merge / strategic-merge (as merge) / JSON patch (a failed `test` is 422), the status
subresource kept apart from spec, CRD defaulting + strict schema + CEL (tests/support/apiserver.py)
for llmtrain's kinds, ownerReference garbage collection, watches that honour resourceVersion and
timeoutSeconds and answer 410 Gone for compacted history, and a bounded request history.

Fault injection (`faults`): conflicts and 500s on writes, latency, and cutting every watch stream.

kmock internals used, in this one place: `KubernetesScaffold._handle` (overridden for resource
requests), `Request._raw_request` (to stream watch responses) and `RawHandler._requests` (trimmed).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

from support import apiserver

ROOT = Path(__file__).resolve().parent.parent.parent
HISTORY = 20000
REQUESTS_KEPT = 1000

#: (group/version, plural) -> (kind, namespaced, has status subresource)
BUILTINS: dict[tuple[str, str], tuple[str, bool]] = {
    # discovery only: kmock 0.8's path parser cannot parse requests to /api/v1/namespaces itself (the
    # operator never makes them: it runs with kopf's scanning disabled)
    ("v1", "namespaces"): ("Namespace", False),
    ("v1", "pods"): ("Pod", True),
    ("v1", "configmaps"): ("ConfigMap", True),
    ("v1", "secrets"): ("Secret", True),
    ("v1", "services"): ("Service", True),
    ("v1", "serviceaccounts"): ("ServiceAccount", True),
    ("v1", "events"): ("Event", True),
    ("events.k8s.io/v1", "events"): ("Event", True),
    ("batch/v1", "jobs"): ("Job", True),
    ("rbac.authorization.k8s.io/v1", "roles"): ("Role", True),
    ("rbac.authorization.k8s.io/v1", "rolebindings"): ("RoleBinding", True),
    ("coordination.k8s.io/v1", "leases"): ("Lease", True),
}
STATUS_SUBRESOURCE = {"Pod", "Job", "Service", "DataSource", "TrainingRun", "ModelExport"}


@dataclass
class Faults:
    """Injected misbehaviour; probabilities per request."""

    conflict_rate: float = 0.0  # writes answered 409 Conflict
    error_rate: float = 0.0  # writes answered 500
    latency: float = 0.0  # seconds added to every request
    rng: random.Random = field(default_factory=lambda: random.Random(0))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _json_patch(obj: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902; raises ValueError (422) when a `test` fails or a path is missing."""
    obj = copy.deepcopy(obj)
    for op in ops:
        parts = _pointer(op["path"])
        parent = obj
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ValueError(f"test operation failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ValueError(f"no value at {op['path']}")
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            elif last in parent:
                del parent[last]
            else:
                raise ValueError(f"no value at {op['path']}")
    return obj


def _selector_matches(obj: dict[str, Any], labels: str | None, fields: str | None) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (labels or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if have.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if have.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in have:
                return False
        elif term not in have:
            return False
    for term in filter(None, (fields or "").split(",")):
        key, _, value = term.partition("=")
        current: Any = obj
        for part in key.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        if str(current) != value:
            return False
    return True


class EmulatedApiServer(kmock.KubernetesScaffold):
    """The object store and semantics; kmock does discovery and HTTP."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.kinds: dict[tuple[str, str], tuple[str, bool]] = dict(BUILTINS)
        self.crds: dict[str, dict[str, Any]] = {}
        self.version = 0
        #: (resourceVersion, (group/version, plural), event, the labels before a MODIFIED)
        self.history: deque[tuple[int, tuple[str, str], dict[str, Any], dict | None]] = deque(maxlen=HISTORY)
        self.changed = asyncio.Condition()
        self.faults = Faults()
        self.watch_generation = 0
        self.writes = 0
        self.calls: set[tuple[str, str, str, str, str]] = set()
        self.verbs: Counter[tuple[str, str]] = Counter()  # (client, verb) -> requests
        for (group_version, plural), (kind, namespaced) in BUILTINS.items():
            self.resources[f"{group_version}/{plural}"] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                subresources={"status"} if kind in STATUS_SUBRESOURCE else set(),
            )
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            self.add_crd(yaml.safe_load(path.read_text()))

    def add_crd(self, crd: dict[str, Any]) -> None:
        names, group = crd["spec"]["names"], crd["spec"]["group"]
        version = crd["spec"]["versions"][0]["name"]
        self.kinds[(f"{group}/{version}", names["plural"])] = (names["kind"], True)
        self.crds[names["kind"]] = crd
        self.resources[f"{group}/{version}/{names['plural']}"] = kmock.ResourceInfo(
            kind=names["kind"],
            namespaced=True,
            singular=names["singular"],
            shortnames=set(names.get("shortNames", [])),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"},
        )

    # -- helpers for tests (call from the server's loop via `ServerThread.call`) ----------------------

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (_, _), bucket in self.objects.items()
            for o in bucket.values()
            if o.get("kind") == kind
        ]

    async def cut_watches(self) -> None:
        """Close every open watch stream (as an API server restart or a load balancer would)."""
        self.watch_generation += 1
        async with self.changed:
            self.changed.notify_all()

    # -- dispatch ------------------------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        del self._requests[:-REQUESTS_KEPT]  # bounded history: kmock keeps every request otherwise
        res = request.resource
        if res is None or not res.plural or res.version is None:
            return await super()._handle(request)
        group_version = f"{res.group}/{res.version}" if res.group else res.version
        key = (group_version, res.plural)
        if key not in self.kinds:
            return _status(404, "NotFound", f"the server could not find the requested resource ({res.plural})")
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        method = str(request.method).upper().split(".")[-1]
        self._record_call(request, key, method)
        params = request.params
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            self.writes += 1
            roll = self.faults.rng.random()
            if roll < self.faults.error_rate:
                return _status(500, "InternalError", "injected fault: internal error")
            if roll < self.faults.error_rate + self.faults.conflict_rate and method != "POST":
                return _status(409, "Conflict", "injected fault: the object has been modified")
        try:
            if method == "GET" and str(params.get("watch", "")).lower() in ("true", "1"):
                return await self._watch(request, key)
            if method == "GET" and request.name:
                return _json(self._get(key, request.namespace, request.name))
            if method == "GET":
                return _json(self._list(key, request.namespace, params))
            if method == "POST":
                return _json(await self._create(key, request.namespace, request.data), 201)
            if method == "PUT":
                return _json(await self._replace(key, request, request.data))
            if method == "PATCH":
                return _json(await self._patch(key, request))
            if method == "DELETE":
                options = request.data if isinstance(request.data, dict) else {}
                wanted = (options.get("preconditions") or {}).get("uid")
                return _json(await self._delete(key, request.namespace, request.name, wanted))
        except ApiError as exc:
            return _status(exc.code, exc.reason, exc.message)
        return _status(405, "MethodNotAllowed", f"{method} is not supported")

    def _record_call(self, request: kmock.Request, key: tuple[str, str], method: str) -> None:
        """Who called what, as RBAC sees it: (client, verb, API group, resource[/subresource], name)."""
        agent = (request.headers.get("User-Agent") or "").split("/")[0]
        watch = str(request.params.get("watch", "")).lower() in ("true", "1")
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method) or (
            "watch" if watch else ("get" if request.name else "list")
        )
        group = key[0].rpartition("/")[0]
        resource = key[1] + (f"/{request.subresource}" if request.subresource else "")
        self.calls.add((agent, verb, group, resource, request.name or ""))
        self.verbs[(agent, verb)] += 1

    # -- reads ---------------------------------------------------------------------------------------

    def _get(self, key, namespace, name) -> dict[str, Any]:
        found = self.objects.get(key, {}).get((namespace or "", name))
        if found is None:
            raise ApiError(404, "NotFound", f'{key[1]} "{name}" not found')
        return found

    def _list(self, key, namespace, params) -> dict[str, Any]:
        items = [
            o
            for (ns, _), o in sorted(self.objects.get(key, {}).items())
            if (not namespace or ns == namespace)
            and _selector_matches(o, params.get("labelSelector"), params.get("fieldSelector"))
        ]
        kind = self.kinds[key][0]
        return {
            "apiVersion": key[0],
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self.version)},
            "items": items,
        }

    async def _watch(self, request: kmock.Request, key) -> aiohttp.web.StreamResponse:
        params = request.params
        raw = request._raw_request  # kmock internal: the aiohttp request, to stream the response
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        timeout = float(params.get("timeoutSeconds") or 300)
        since = params.get("resourceVersion")
        generation = self.watch_generation
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def visible(obj: dict[str, Any]) -> bool:
            ns = obj.get("metadata", {}).get("namespace") or ""
            return (not request.namespace or ns == request.namespace) and _selector_matches(
                obj, params.get("labelSelector"), params.get("fieldSelector")
            )

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        async def send_visible(event: dict[str, Any], before: dict | None) -> None:
            """As the API server's filtered watch: an object that starts matching the selector is ADDED,
            one that stops matching is DELETED (its new state)."""
            obj, now = event["object"], visible(event["object"])
            was = now if before is None else visible({**obj, "metadata": {**obj["metadata"], "labels": before}})
            if now and was:
                await send(event["type"], obj)
            elif now:
                await send("ADDED", obj)
            elif was:
                await send("DELETED", obj)

        if since in (None, "", "0"):
            for obj in self._list(key, request.namespace, params)["items"]:
                await send("ADDED", obj)
            last = self.version
        else:
            last = int(since)
            oldest = self.history[0][0] if self.history else self.version + 1
            if last < oldest - 1 and last < self.version:
                await send(
                    "ERROR",
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "code": 410,
                        "reason": "Expired",
                        "message": f"too old resource version: {last}",
                    },
                )
                await response.write_eof()
                return response
        try:
            while loop.time() < deadline and generation == self.watch_generation:
                fresh = []
                for entry in reversed(self.history):  # only what is newer: no rescans
                    if entry[0] <= last:
                        break
                    fresh.append(entry)
                for version, event_key, event, before in reversed(fresh):
                    if event_key == key:
                        await send_visible(event, before)
                    last = version
                async with self.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), timeout=max(0.01, deadline - loop.time()))
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # -- writes --------------------------------------------------------------------------------------

    async def _record(self, key, kind: str, obj: dict[str, Any], before: dict[str, Any] | None = None) -> None:
        labels = copy.deepcopy(before["metadata"].get("labels") or {}) if before is not None else None
        self.history.append((self.version, key, {"type": kind, "object": copy.deepcopy(obj)}, labels))
        async with self.changed:
            self.changed.notify_all()

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def _admit(self, key, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        kind = self.kinds[key][0]
        crd = self.crds.get(kind)
        if crd is None:
            return obj
        schema = apiserver.root_schema(crd)
        defaulted = apiserver.apply_defaults(schema, obj)
        errors = apiserver.admit(crd, obj, old)
        if errors:
            name = obj.get("metadata", {}).get("name")
            raise ApiError(422, "Invalid", f'{kind}.llmtrain.dev "{name}" is invalid: ' + "; ".join(errors))
        return defaulted

    async def _create(self, key, namespace, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        kind, namespaced = self.kinds[key]
        meta = obj.setdefault("metadata", {})
        if namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        bucket = self.objects.setdefault(key, {})
        ident = (meta.get("namespace") or "", meta["name"])
        if ident in bucket:
            raise ApiError(409, "AlreadyExists", f'{key[1]} "{meta["name"]}" already exists')
        obj.setdefault("apiVersion", key[0])
        obj.setdefault("kind", kind)
        if kind in STATUS_SUBRESOURCE and kind in self.crds:
            obj.pop("status", None)
        obj = self._admit(key, obj, None)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        if "spec" in obj:
            meta["generation"] = 1
        self._stamp(obj)
        bucket[ident] = obj
        await self._record(key, "ADDED", obj)
        return obj

    async def _write(self, key, request: kmock.Request, new: dict[str, Any]) -> dict[str, Any]:
        """Store a changed object: subresource separation, conflict check, generation, admission."""
        old = self._get(key, request.namespace, request.name)
        kind = self.kinds[key][0]
        wanted_version = new.get("metadata", {}).get("resourceVersion")
        if wanted_version and wanted_version != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key[1]} "{request.name}": the object'
                " has been modified; please apply your changes to the latest version and try again",
            )
        if kind in STATUS_SUBRESOURCE:
            if request.subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    new.pop("status")
            else:
                new = {**new, **({"status": old["status"]} if "status" in old else {})}
                if "status" not in old:
                    new.pop("status", None)
        new["metadata"] = {
            **new.get("metadata", {}),
            **{
                k: old["metadata"][k] for k in ("uid", "creationTimestamp", "namespace", "name") if k in old["metadata"]
            },
        }
        if "generation" in old["metadata"]:
            new["metadata"]["generation"] = old["metadata"]["generation"] + (new.get("spec") != old.get("spec"))
        if kind in self.crds:
            new = self._admit(key, new, old)
        if _without_version(new) == _without_version(old):
            return old  # a no-op write changes nothing, not even the resourceVersion
        self._stamp(new)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return await self._remove(key, new)
        self.objects[key][(meta.get("namespace") or "", meta["name"])] = new
        await self._record(key, "MODIFIED", new, before=old)
        return new

    async def _replace(self, key, request: kmock.Request, body: dict[str, Any]) -> dict[str, Any]:
        return await self._write(key, request, copy.deepcopy(body))

    async def _patch(self, key, request: kmock.Request) -> dict[str, Any]:
        old = self._get(key, request.namespace, request.name)
        content_type = request.headers.get("Content-Type", "")
        body = request.data
        try:
            if "json-patch" in content_type:
                new = _json_patch(old, body)
            elif "merge-patch" in content_type or "strategic-merge-patch" in content_type:
                new = _merge(copy.deepcopy(old), body)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ApiError(422, "Invalid", str(exc)) from None
        explicit = isinstance(body, dict) and "resourceVersion" in (body.get("metadata") or {})
        if not explicit:  # only a patch that names a resourceVersion is checked against it
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return await self._write(key, request, new)

    async def _delete(self, key, namespace, name, uid: str | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(self._get(key, namespace, name))
        if uid and obj["metadata"].get("uid") != uid:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {key[1]} "{name}": Precondition failed: UID in precondition:'
                f" {uid}, UID in object meta: {obj['metadata'].get('uid')}",
            )
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                self._stamp(obj)
                self.objects[key][(obj["metadata"].get("namespace") or "", name)] = obj
                await self._record(key, "MODIFIED", obj)
            return obj
        return await self._remove(key, obj)

    async def _remove(self, key, obj: dict[str, Any]) -> dict[str, Any]:
        """Delete and garbage-collect dependents (background propagation)."""
        meta = obj["metadata"]
        self.objects[key].pop((meta.get("namespace") or "", meta["name"]), None)
        self._stamp(obj)
        await self._record(key, "DELETED", obj)
        uid = meta.get("uid")
        for child_key, bucket in list(self.objects.items()):
            for ident, child in list(bucket.items()):
                if any(r.get("uid") == uid for r in child["metadata"].get("ownerReferences") or []):
                    await self._delete(child_key, ident[0], ident[1])
        return {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": meta["name"]}}


def _without_version(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _json(payload: dict[str, Any], status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(payload, status=status)


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return _json(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        code,
    )


class ServerThread:
    """The emulated API server on 127.0.0.1 in its own thread and event loop (tests stay synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.server: EmulatedApiServer | None = None
        self.url = ""
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="kube-api", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.server = EmulatedApiServer()
        async with self.server, kmock.Server(self.server) as http:
            self.url = str(http.url).rstrip("/")
            self.ready.set()
            await self._stop.wait()

    def start(self) -> ServerThread:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the emulated API server did not start")
        return self

    def call(self, coroutine_or_function, *args):
        """Run something on the server's loop (its state is not thread-safe) and return the result."""

        async def run():
            result = coroutine_or_function(*args)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)

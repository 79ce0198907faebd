"""`Store` over the Kubernetes API: plain HTTPS with urllib3 and kopf's own credentials.

No Kubernetes client library: the official one costs the operator ~40 MiB of memory for code it would not
use. Credentials come from kopf's login functions (service account in a pod, else kubeconfig), or an
explicit URL; the service-account token is re-read when it changes (projected tokens rotate).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3

from llmtrain.api.common import GROUP, VERSION
from llmtrain.control.store import Conflict, NotFound

from . import __version__

#: kind -> (API prefix, plural)
PATHS: dict[str, tuple[str, str]] = {
    "Pod": ("/api/v1", "pods"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Event": ("/api/v1", "events"),
    "Job": ("/apis/batch/v1", "jobs"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "DataSource": (f"/apis/{GROUP}/{VERSION}", "datasources"),
    "TrainingRun": (f"/apis/{GROUP}/{VERSION}", "trainingruns"),
    "ModelExport": (f"/apis/{GROUP}/{VERSION}", "modelexports"),
}
MERGE = "application/merge-patch+json"
WRITES = ("POST", "PUT", "PATCH")
#: as kubectl asks: a field the schema lacks is a 422, not silently pruned (the API server's default for
#: other clients; found by running the emulator's contract suite against the real server)
STRICT = "?fieldValidation=Strict"


class ApiError(RuntimeError):
    """Any other API failure (5xx, 422, ...): the status code and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate (from `kopf.ConnectionInfo` or a bare URL)."""

    server: str
    token: str | None = None
    token_path: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        def as_file(data: str | bytes | None, path: Any) -> str | None:
            if path:
                return str(path)
            if not data:
                return None
            raw = data if isinstance(data, bytes) else data.encode()
            with contextlib.suppress(ValueError):  # kubeconfig data is base64; kopf may have decoded it
                raw = base64.b64decode(raw, validate=True)
            handle, name = tempfile.mkstemp(prefix="llmtrain-operator-")
            os.write(handle, raw)
            os.close(handle)
            return name

        token_path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        return cls(
            server=info.server.rstrip("/"),
            token=info.token,
            token_path=token_path if info.token and Path(token_path).exists() else None,
            ca_path=as_file(info.ca_data, info.ca_path),
            cert_path=as_file(info.certificate_data, info.certificate_path),
            key_path=as_file(info.private_key_data, info.private_key_path),
            insecure=bool(info.insecure),
        )


class KubeStore:
    def __init__(self, connection: Connection | str, component: str = "llmtrain-operator", pool: int = 16) -> None:
        self.connection = Connection(connection.rstrip("/")) if isinstance(connection, str) else connection
        self.component = component
        self.user_agent = f"{component}/{__version__}"
        c = self.connection
        kwargs: dict[str, Any] = {"maxsize": pool, "retries": False, "timeout": urllib3.Timeout(connect=10, read=60)}
        if c.server.startswith("https://"):
            context = (
                ssl.create_default_context(cafile=c.ca_path) if not c.insecure else ssl._create_unverified_context()
            )
            if c.cert_path and c.key_path:
                context.load_cert_chain(c.cert_path, c.key_path)
            kwargs["ssl_context"] = context
        self.http = urllib3.PoolManager(**kwargs)
        self._token = c.token

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json", "User-Agent": self.user_agent}
        if self.connection.token_path:
            with contextlib.suppress(OSError):
                self._token = Path(self.connection.token_path).read_text().strip()
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _path(self, kind: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = PATHS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if method in WRITES and "?" not in path:
            path += STRICT
        response = self.http.request(
            method,
            self.connection.server + path,
            fields=query if method == "GET" else None,
            body=None if body is None else json.dumps(body).encode(),
            headers=self._headers(content_type),
        )
        if response.status == 404:
            raise NotFound(path)
        if response.status == 409:
            raise Conflict(path)
        if response.status >= 400:
            try:
                message = json.loads(response.data).get("message", "")
            except ValueError:
                message = response.data[:500].decode(errors="replace")
            raise ApiError(response.status, message)
        return json.loads(response.data) if response.data else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._path(kind, namespace, name))
        except NotFound:
            return None

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return self.list_with_version(kind, namespace, labels)[0]

    def list_with_version(
        self, kind: str, namespace: str | None, labels: dict[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The items and the list's resourceVersion (the point in the server's history it shows)."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        result = self._call("GET", self._path(kind, namespace), query=query)
        items = result.get("items") or []
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("kind", kind)
        version = str((result.get("metadata") or {}).get("resourceVersion") or "")
        return items, int(version) if version.isdigit() else None

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", self._path(obj["kind"], obj["metadata"].get("namespace")), obj)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace (PUT): the object becomes exactly `obj` (a merge patch could not remove a drifted key)."""
        meta = obj["metadata"]
        body = {k: v for k, v in obj.items() if k != "status"}
        return self._call("PUT", self._path(obj["kind"], meta["namespace"], meta["name"]), body)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, namespace, name), patch, content_type=MERGE)

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, namespace, name, "status"), {"status": status}, content_type=MERGE)

    def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._call("DELETE", self._path(kind, namespace, name), body)

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason[:128],
            "message": message[:1024],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call("POST", self._path("Event", meta["namespace"]), event)

    def warning_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={kind},involvedObject.name={name},type=Warning"
        result = self._call("GET", self._path("Event", namespace), query={"fieldSelector": selector})
        return result.get("items") or []

    def progress_sink(self, namespace: str, configmap: str) -> str | None:
        return None  # the trainer patches the ConfigMap itself

    def progress(self, namespace: str, configmap: str) -> dict[str, Any] | None:
        return None  # in the ConfigMap, read with the run's other children (no second GET)

    def direct(self) -> KubeStore:
        return self  # every read goes to the API server

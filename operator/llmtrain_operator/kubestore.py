"""`Store` over the Kubernetes API with the official client (one generic path per kind, no codegen types)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import kubernetes

from llmtrain.api.common import GROUP, VERSION
from llmtrain.control.store import Conflict, NotFound

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


class KubeStore:
    def __init__(self, client: kubernetes.client.ApiClient, component: str = "llmtrain-operator") -> None:
        self.client, self.component = client, component

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
        query: list | None = None,
        content_type: str = "application/json",
    ) -> Any:
        try:
            data = self.client.call_api(
                path,
                method,
                query_params=query or [],
                body=body,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                raise NotFound(path) from None
            if exc.status == 409:
                raise Conflict(path) from None
            raise
        raw = data.data if hasattr(data, "data") else data
        return json.loads(raw) if raw else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._path(kind, namespace, name))
        except NotFound:
            return None

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items()))] if labels else []
        result = self._call("GET", self._path(kind, namespace), query=query)
        items = result.get("items") or []
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("kind", kind)
        return items

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", self._path(obj["kind"], obj["metadata"].get("namespace")), obj)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        patch = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
        return self._call("PATCH", self._path(obj["kind"], meta["namespace"], meta["name"]), patch, content_type=MERGE)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, namespace, name), patch, content_type=MERGE)

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", self._path(kind, namespace, name, "status"), {"status": status}, content_type=MERGE)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
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

    def progress_sink(self, namespace: str, configmap: str) -> str | None:
        return None  # the trainer patches the ConfigMap itself

    def progress(self, namespace: str, configmap: str) -> dict[str, Any] | None:
        found = self.get("ConfigMap", namespace, configmap)
        text = ((found or {}).get("data") or {}).get("progress.json")
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None

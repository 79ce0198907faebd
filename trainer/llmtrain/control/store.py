"""The few API operations the reconciler and the job executor need, over any backend.

Two implementations: `llmtrain.local.filestore.FileStore` (a work directory; the local runner) and
`llmtrain_operator.kubestore.KubeStore` (a Kubernetes API server over HTTP). Kinds are the plain
Kubernetes kind names (`Job`, `Pod`, `ConfigMap`, `TrainingRun`, ...).
"""

from __future__ import annotations

from typing import Any, Protocol


class NotFound(LookupError):
    """The object does not exist."""


class Conflict(RuntimeError):
    """The object exists already, or changed since it was read."""


class Store(Protocol):
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]: ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def update(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...

    def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete (background propagation); with `uid`, only that object (Conflict if the name now holds
        another)."""
        ...

    def event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None: ...

    def warning_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """The Warning Events about one object (a Job's FailedCreate: why the API server refused a pod)."""
        ...

    def progress_sink(self, namespace: str, configmap: str) -> str | None:
        """Where a trainer pod's progress sink should point (None: the ConfigMap itself)."""
        ...

    def progress(self, namespace: str, configmap: str) -> dict[str, Any] | None:
        """A run's progress report kept outside the API (the local runner's file); None when it lives in the
        run's progress ConfigMap, which the reconciler reads with the other children."""
        ...

    def direct(self) -> Store:
        """The same world read without a cache (the store itself when it has none): a terminal status is
        decided on what this reads."""
        ...

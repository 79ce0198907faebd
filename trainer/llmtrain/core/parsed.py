"""Typed resources from stored objects, memoized on what validation reads.

The operator reconciles a run every time its trainer reports progress; validating the same spec again
each time (pydantic plus the CRD's CEL rules, interpreted) was 73% of the operator's reconcile CPU with
1,000 runs reporting every second. The models are keyed by kind, name, namespace, labels, annotations,
generation and spec: status, resourceVersion and the rest of the metadata change without changing the
verdict. The core never modifies a model (the unit tests pass with the models frozen), so one instance
can be shared; errors are not cached.
"""

from __future__ import annotations

import functools
import json
from typing import Any, TypeVar

from ..api import Resource, parse_resource

R = TypeVar("R", bound=Resource)
META = ("name", "namespace", "labels", "annotations", "generation")


def _essence(body: dict[str, Any]) -> str:
    meta = body.get("metadata") or {}
    doc = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in META if k in meta} if isinstance(meta, dict) else meta,
    }
    if "spec" in body:
        doc["spec"] = body["spec"]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=4096)
def _resource(text: str) -> Resource:
    return parse_resource(json.loads(text))


@functools.lru_cache(maxsize=4096)
def _model(model: type[Resource], text: str) -> Resource:
    return model.model_validate(json.loads(text))


def resource(body: dict[str, Any]) -> Resource:
    """`parse_resource(body)` (raises `SpecError` naming the fields), memoized."""
    return _resource(_essence(body))


def model(kind: type[R], body: dict[str, Any]) -> R:
    """`kind.model_validate(body)` without its status, memoized (a dependency the API server accepted)."""
    return _model(kind, _essence(body))  # type: ignore[return-value]

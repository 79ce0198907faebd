"""Resources as the API server stores them, for tests of the functional core."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from llmtrain.api import parse_resource
from support.paths import ROOT

EXAMPLES = ROOT / "examples"
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def stored(document: dict[str, Any], index: int, namespace: str = "team-a") -> dict[str, Any]:
    """A parsed, defaulted resource with the metadata the API server sets."""
    body = parse_resource(document).to_wire()
    body["metadata"].update(
        namespace=namespace, uid=f"uid-{index}", generation=1, creationTimestamp="2026-11-26T11:00:00Z"
    )
    return body


def ready(body: dict[str, Any]) -> dict[str, Any]:
    """A DataSource whose ingest has succeeded."""
    body = copy.deepcopy(body)
    body["status"] = {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ingested"}],
    }
    return body

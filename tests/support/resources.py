"""Resources as the API server stores them, for tests of the functional core."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmtrain.api import parse_resource
from llmtrain.api.manifests import read_documents
from llmtrain.local.filestore import FileStore
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


def world_with_a_run(root: Path) -> tuple[FileStore, dict[str, Any]]:
    """A FileStore holding the example's DataSource (ingested, reading a PVC) and its TrainingRun."""
    world = FileStore(root)
    documents = read_documents(EXAMPLES / "run.yaml")
    documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "*.txt"}}]
    world.create(ready(stored(documents[0], 0)))
    return world, world.create(stored(documents[1], 1))

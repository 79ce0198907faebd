"""The trainer Job the core builds for the example TrainingRun (in a cluster), spec sections changed at will."""

from __future__ import annotations

from typing import Any

from llmtrain.api import DataSource, TrainingRun, parse_resource
from llmtrain.api.manifests import read_documents
from llmtrain.core import Context, trainingrun
from support.resources import EXAMPLES, stored


def trainer_job(**spec: Any) -> dict[str, Any]:
    """The Job of the example run, its DataSource reading a PVC; `spec` replaces top-level spec fields."""
    documents = read_documents(EXAMPLES / "run.yaml")
    documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "*.txt"}}]
    documents[1]["spec"].update(spec)
    source, body = stored(documents[0], 0), stored(documents[1], 1)
    run = parse_resource(body)
    assert isinstance(run, TrainingRun)
    data = parse_resource(source)
    assert isinstance(data, DataSource)
    ctx = Context(storage_root="s3://models/llmtrain")
    return trainingrun.build(body, run, [(data, "team-a")], None, ctx).job

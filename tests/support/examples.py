"""The examples (examples/*.yaml) shrunk to seconds for the tests: a 2-layer model of width 64 where the spec
gives the shape, short runs, small validation, safetensors-only exports; their corpus read from absolute local
paths (`llmtrain run`) or from the `corpus` PVC (a cluster)."""

from __future__ import annotations

import uuid
from typing import Any

import yaml

from support.paths import ROOT

EXAMPLES = ROOT / "examples"
SMALL_SHAPE = {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "intermediateSize": 192, "maxSeqLen": 64}
#: where a cluster's corpus PVC holds examples/data/shakespeare (tests/integration/conftest.py copies it there)
CORPUS_CLAIM = "corpus"


def load(name: str) -> list[dict[str, Any]]:
    """The documents of examples/`name`."""
    return list(yaml.safe_load_all((EXAMPLES / name).read_text()))


def shrink(documents: list[dict[str, Any]], steps: int = 20) -> list[dict[str, Any]]:
    """Each TrainingRun trains `steps` steps of 4 sequences of 64 tokens (the small shape where spec.model
    gives one), validates and checkpoints every 10 and 5 steps; each ModelExport writes safetensors only."""
    for document in documents:
        spec = document["spec"]
        if document["kind"] == "TrainingRun":
            _shrink_run(spec, steps)
        elif document["kind"] == "ModelExport":
            spec.update(formats=["safetensors"], quantization="none")
    return documents


def _shrink_run(spec: dict[str, Any], steps: int) -> None:
    model = spec.get("model") or {}
    spec["model"] = {**model, **SMALL_SHAPE} if "layers" in model else {**model, "maxSeqLen": SMALL_SHAPE["maxSeqLen"]}
    spec["training"].update(maxSteps=steps, microBatchSize=4, gradientAccumulationSteps=1)
    scheduler = spec["training"].setdefault("scheduler", {})
    scheduler["warmupSteps"] = 2
    if "decaySteps" in scheduler:
        scheduler["decaySteps"] = steps // 4
    spec["validation"] = {"everySteps": 10, "batches": 2}
    spec["checkpointing"] = {"everySteps": 5, "keepLast": 2, "keepBest": 1}


def local_paths(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Local sources as absolute paths, so that the run file may live anywhere."""
    for source in _local_sources(documents):
        source["local"]["path"] = str(EXAMPLES / source["local"]["path"])
    return documents


def in_cluster(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Local sources read from the corpus PVC instead (a cluster refuses local paths); every output
    (datasets, checkpoints, exports) under a fresh prefix of the storage PVC, which outlives a test on a
    real cluster."""
    prefix = f"pvc://llmtrain-storage/e2e-{uuid.uuid4().hex[:8]}"
    for source in _local_sources(documents):
        path = source.pop("local")["path"]
        source["pvc"] = {"claimName": CORPUS_CLAIM, "path": path.removeprefix("data/")}
    for document in documents:
        name, spec = document["metadata"]["name"], document["spec"]
        if document["kind"] == "DataSource":
            spec.setdefault("output", {})["uri"] = f"{prefix}/{name}"
        elif document["kind"] == "TrainingRun":
            spec.setdefault("checkpointing", {})["uri"] = f"{prefix}/{name}"
        else:
            spec.setdefault("output", {})["uri"] = f"{prefix}/{name}"
    return documents


def _local_sources(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        source
        for document in documents
        if document["kind"] == "DataSource"
        for source in document["spec"]["sources"]
        if "local" in source
    ]

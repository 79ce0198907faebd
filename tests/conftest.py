"""Shared fixtures: the repository's paths, the generated CRDs and minimal valid resources."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from support.paths import ROOT

VALID: dict[str, dict[str, Any]] = {
    "DataSource": {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": "corpus"},
        "spec": {"sources": [{"local": {"path": "data/*.txt"}}], "tokenizer": {"vocabSize": 1024}},
    },
    "TrainingRun": {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "run"},
        "spec": {
            "dataSourceRef": {"name": "corpus"},
            "model": {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "maxSeqLen": 64},
            "training": {"maxSteps": 10},
        },
    },
    "ModelExport": {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": "export"},
        "spec": {"trainingRunRef": {"name": "run"}, "formats": ["safetensors", "gguf"]},
    },
}


@pytest.fixture
def valid() -> dict[str, dict[str, Any]]:
    """A fresh copy of a minimal valid object of each kind."""
    return copy.deepcopy(VALID)


@pytest.fixture(scope="session")
def crds() -> dict[str, dict[str, Any]]:
    """The committed CRDs, by kind."""
    out = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd
    return out

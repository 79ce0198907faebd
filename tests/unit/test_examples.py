"""The examples are valid for the models and for the API server (schema, strict fields, CEL)."""

from __future__ import annotations

import pytest
import yaml

from llmtrain.api import DataSource, ModelExport, TrainingRun, load_resources, select_resource
from support.apiserver import admit
from support.paths import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_both_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"run.yaml", "gpu-2x8.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_admitted_by_the_crds(crds, path):
    documents = list(yaml.safe_load_all(path.read_text()))
    assert {d["kind"] for d in documents} == {"DataSource", "TrainingRun", "ModelExport"}
    for document in documents:
        assert admit(crds[document["kind"]], document) == [], document["metadata"]["name"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_and_references_resolve(path):
    resources = load_resources(path)
    source = select_resource(resources, DataSource)
    run = select_resource(resources, TrainingRun)
    export = select_resource(resources, ModelExport)
    assert run.spec.data_source_ref.name == source.name
    assert export.spec.training_run_ref is not None and export.spec.training_run_ref.name == run.name


def test_models_and_api_server_fill_the_same_defaults(crds):
    """Defaults live in the models; the CRD's copy must agree with them."""
    from support.apiserver import apply_defaults, root_schema

    for resource in load_resources(ROOT / "examples" / "run.yaml"):
        raw = next(
            d
            for d in yaml.safe_load_all((ROOT / "examples" / "run.yaml").read_text())
            if d["metadata"]["name"] == resource.name
        )
        defaulted = apply_defaults(root_schema(crds[resource.KIND]), raw)
        assert defaulted["spec"] == resource.to_wire()["spec"]


def test_local_example_is_small_enough_for_two_cores():
    """The example's shape stays within what bench/train.py (`example_run_minutes`) measures on 2 cores."""
    run = select_resource(load_resources(ROOT / "examples" / "run.yaml"), TrainingRun)
    model = run.spec.model
    assert run.spec.resources.gpus_per_node == 0 and run.spec.training.precision == "fp32"
    assert model.layers <= 4 and model.hidden_size <= 256 and model.max_seq_len <= 256


def test_local_example_data_ships_with_the_repo():
    source = select_resource(load_resources(ROOT / "examples" / "run.yaml"), DataSource)
    pattern = source.spec.sources[0].local.path
    files = list((ROOT / "examples").glob(pattern))
    assert len(files) >= 10 and sum(f.stat().st_size for f in files) > 1_000_000

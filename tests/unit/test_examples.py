"""The examples are valid for the models and for the API server (schema, strict fields, CEL), every reference
resolves within its file, and the local ones stay small enough for 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmtrain.api import DataSource, ModelExport, TrainingRun, load_resources, select_resource
from llmtrain.api.resource import Resource
from support.apiserver import admit
from support.paths import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
#: one DataSource, one TrainingRun and one ModelExport, each referencing the one before
SINGLE_RUN_EXAMPLES = ("run.yaml", "gpu-2x8.yaml")
#: the examples `llmtrain run` runs on this machine from examples/data (their DataSources read local paths)
LOCAL_EXAMPLES = ("run.yaml", "continued-pretraining.yaml", "mixture.yaml")


def by_name(resources: list[Resource], kind: type[Resource]) -> dict[str, Resource]:
    return {r.name: r for r in resources if isinstance(r, kind)}


def test_the_examples_exist():
    assert {p.name for p in EXAMPLES} >= {*SINGLE_RUN_EXAMPLES, *LOCAL_EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_admitted_by_the_crds(crds, path):
    documents = list(yaml.safe_load_all(path.read_text()))
    assert {d["kind"] for d in documents} == {"DataSource", "TrainingRun", "ModelExport"}
    names = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert len(set(names)) == len(names), "two resources of one kind share a name"
    for document in documents:
        assert admit(crds[document["kind"]], document) == [], document["metadata"]["name"]


@pytest.mark.parametrize("name", SINGLE_RUN_EXAMPLES)
def test_single_run_example_parses_and_references_resolve(name):
    resources = load_resources(ROOT / "examples" / name)
    source = select_resource(resources, DataSource)
    run = select_resource(resources, TrainingRun)
    export = select_resource(resources, ModelExport)
    assert run.spec.data_source_ref.name == source.name
    assert export.spec.training_run_ref is not None and export.spec.training_run_ref.name == run.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_reference_resolves_within_the_example(path):
    """dataSourceRef or data[].dataSourceRef, tokenizer.fromDataSourceRef, init.trainingRunRef and
    modelExportRef, and each export's trainingRunRef (or dataSourceRef) name a resource of the file."""
    resources = load_resources(path)
    sources, runs, exports = (by_name(resources, kind) for kind in (DataSource, TrainingRun, ModelExport))
    for source in sources.values():
        shared = source.spec.tokenizer.from_data_source_ref
        assert shared is None or (shared.name in sources and shared.name != source.name), source.name
    for run in runs.values():
        assert run.spec.mixture() and {name for name, _ in run.spec.mixture()} <= sources.keys(), run.name
        init = run.spec.init
        if init is not None and init.training_run_ref is not None:
            assert init.training_run_ref.name in runs.keys() - {run.name}, run.name
        if init is not None and init.model_export_ref is not None:
            assert init.model_export_ref.name in exports, run.name
    for export in exports.values():
        assert export.spec.training_run_ref is not None and export.spec.training_run_ref.name in runs, export.name
        assert export.spec.data_source_ref is None or export.spec.data_source_ref.name in sources, export.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_mixtures_data_sources_share_one_tokenizer(path):
    """Every DataSource of a mixture but the first imports the first's tokenizer (fromDataSourceRef) and
    describes it alike: type, vocabSize, specialTokens."""
    resources = load_resources(path)
    sources = by_name(resources, DataSource)
    for run in by_name(resources, TrainingRun).values():
        first, *others = (sources[name] for name, _ in run.spec.mixture())
        for other in others:
            assert other.spec.tokenizer.from_data_source_ref.name == first.name, (run.name, other.name)
            for field in ("type", "vocab_size", "special_tokens"):
                assert getattr(other.spec.tokenizer, field) == getattr(first.spec.tokenizer, field), field


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_models_and_api_server_fill_the_same_defaults(crds, path):
    """Defaults live in the models; the CRD's copy must agree with them."""
    from support.apiserver import apply_defaults, root_schema

    documents = list(yaml.safe_load_all(path.read_text()))
    for resource in load_resources(path):
        raw = next(d for d in documents if (d["kind"], d["metadata"]["name"]) == (resource.KIND, resource.name))
        defaulted = apply_defaults(root_schema(crds[resource.KIND]), raw)
        assert defaulted["spec"] == resource.to_wire()["spec"], resource.name


def starting_shape(run: TrainingRun, resources: list[Resource]) -> dict[str, int | None]:
    """layers, hiddenSize, maxSeqLen of the model a run trains: spec.model's, else (spec.init) those of the
    run in the same file whose weights it starts from, directly or through that run's ModelExport."""
    model = run.spec.model
    given = {
        "layers": model.layers if model else None,
        "hiddenSize": model.hidden_size if model else None,
        "maxSeqLen": model.max_seq_len if model else None,
    }
    init = run.spec.init
    if init is None or init.from_uri is not None:
        return given
    base = init.training_run_ref
    if init.model_export_ref is not None:
        base = select_resource(resources, ModelExport, init.model_export_ref.name).spec.training_run_ref
    inherited = starting_shape(select_resource(resources, TrainingRun, base.name), resources)
    return {key: given[key] if given[key] is not None else inherited[key] for key in given}


@pytest.mark.parametrize("name", LOCAL_EXAMPLES)
def test_local_example_is_small_enough_for_two_cores(name):
    """Every run's shape stays within what bench/train.py (`example_run_minutes`) measures on 2 cores."""
    resources = load_resources(ROOT / "examples" / name)
    for run in by_name(resources, TrainingRun).values():
        shape = starting_shape(run, resources)
        assert run.spec.resources.gpus_per_node == 0 and run.spec.training.precision == "fp32", run.name
        assert shape["layers"] <= 4 and shape["hiddenSize"] <= 256 and shape["maxSeqLen"] <= 256, run.name


def local_files(source: DataSource) -> list[list[Path]]:
    """The files each of a DataSource's local sources matches, relative to examples/."""
    return [sorted((ROOT / "examples").glob(s.local.path)) for s in source.spec.sources if s.local is not None]


@pytest.mark.parametrize("name", LOCAL_EXAMPLES)
def test_local_example_data_ships_with_the_repo(name):
    sources = by_name(load_resources(ROOT / "examples" / name), DataSource).values()
    for source in sources:
        matched = local_files(source)
        assert matched and all(matched), source.name
    if name == "run.yaml":
        files = local_files(select_resource(load_resources(ROOT / "examples" / name), DataSource))[0]
        assert len(files) >= 10 and sum(f.stat().st_size for f in files) > 1_000_000


def test_the_mixture_examples_data_sources_share_no_file():
    resources = load_resources(ROOT / "examples" / "mixture.yaml")
    files = [{f for matched in local_files(s) for f in matched} for s in by_name(resources, DataSource).values()]
    assert len(files) == 2 and not files[0] & files[1] and all(len(f) >= 5 for f in files)

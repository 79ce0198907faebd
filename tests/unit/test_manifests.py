"""Reading run files: multi-document YAML, JSON, `kind: List`, stdin, selection by kind and name."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from llmtrain.api import (
    DataSource,
    ModelExport,
    SpecError,
    TrainingRun,
    load_resources,
    parse_resource,
    select_resource,
)
from llmtrain.api.manifests import read_documents


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_multi_document_file_skips_other_groups(tmp_path, valid):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"k": "v"}}
    path = _write(tmp_path, "run.yaml", yaml.safe_dump_all([secret, *valid.values()]))
    resources = load_resources(path)
    assert [type(r) for r in resources] == [DataSource, TrainingRun, ModelExport]


def test_json_and_kind_list(tmp_path, valid):
    path = _write(tmp_path, "run.json", json.dumps({"kind": "List", "items": list(valid.values())}))
    assert [r.name for r in load_resources(path)] == ["corpus", "run", "export"]


def test_stdin(monkeypatch, valid):
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(valid["DataSource"])))
    assert [r.name for r in load_resources("-")] == ["corpus"]


def test_select_by_name_and_the_only_one(valid):
    second = dict(valid["DataSource"], metadata={"name": "other"})
    resources = [DataSource.model_validate(valid["DataSource"]), DataSource.model_validate(second)]
    assert select_resource(resources, DataSource, "other").name == "other"
    with pytest.raises(SpecError, match="expected one DataSource, found 2 \\(corpus, other\\); pass --name"):
        select_resource(resources, DataSource)
    with pytest.raises(SpecError, match="no DataSource named 'missing' \\(found: corpus, other\\)"):
        select_resource(resources, DataSource, "missing")
    with pytest.raises(SpecError, match="expected one TrainingRun, found 0"):
        select_resource(resources, TrainingRun)


def test_errors_of_all_documents_are_reported_together(tmp_path, valid):
    valid["DataSource"]["spec"]["workers"] = 0
    valid["TrainingRun"]["spec"]["training"]["maxSteps"] = -1
    path = _write(tmp_path, "run.yaml", yaml.safe_dump_all(list(valid.values())))
    with pytest.raises(SpecError) as caught:
        load_resources(path)
    assert [str(p) for p in caught.value.problems] == [
        "DataSource/corpus: spec.workers: must be >= 1 (got 0)",
        "TrainingRun/run: spec.training.maxSteps: must be > 0 (got -1)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: [unclosed", "is not valid YAML"),
        ("- just\n- a list\n", "document 0: must be a mapping with apiVersion and kind"),
        (
            "apiVersion: llmtrain.dev/v1alpha1\nkind: Trainingrun\nmetadata: {name: x}\n",
            "kind: must be one of DataSource, TrainingRun, ModelExport (got 'Trainingrun')",
        ),
    ],
)
def test_unreadable_files_say_why(tmp_path, text, message):
    with pytest.raises(SpecError, match=message.replace("[", "\\[").replace("(", "\\(").replace(")", "\\)")):
        load_resources(_write(tmp_path, "bad.yaml", text))


def test_missing_file_and_binary_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read the file: No such file or directory"):
        read_documents(tmp_path / "nope.yaml")
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(SpecError, match="is not UTF-8 text"):
        read_documents(binary)


def test_wire_form_round_trips(valid):
    for obj in valid.values():
        resource = parse_resource(obj)
        assert type(resource).model_validate(resource.to_wire()) == resource


def test_numbers_are_read_as_kubectl_sends_them(tmp_path):
    """`3e-4` is a number (PyYAML alone reads a string) and `2.0` reaches the API server as JSON `2`: the
    models are strict about JSON types, so the run file must be read the way kubectl reads it."""
    path = tmp_path / "run.yaml"
    path.write_text(
        "apiVersion: llmtrain.dev/v1alpha1\nkind: TrainingRun\nmetadata: {name: r}\nspec:\n"
        "  dataSourceRef: {name: d}\n"
        "  model: {layers: 2.0, hiddenSize: 64, heads: 4, maxSeqLen: 64}\n"
        "  training: {maxSteps: 1e3, optimizer: {lr: 3e-4, weightDecay: 1E-1}}\n"
        "  validation: {everySteps: '100'}\n"
    )
    (document,) = read_documents(path)
    training = document["spec"]["training"]
    assert training["maxSteps"] == 1000 and isinstance(training["maxSteps"], int)
    assert training["optimizer"] == {"lr": 3e-4, "weightDecay": 0.1}
    assert document["spec"]["model"]["layers"] == 2 and isinstance(document["spec"]["model"]["layers"], int)
    with pytest.raises(SpecError) as caught:  # a quoted number is a string, for kubectl as here
        parse_resource(document)
    assert [p.path for p in caught.value.problems] == ["spec.validation.everySteps"]
    del document["spec"]["validation"]
    run = parse_resource(document)
    assert run.spec.training.max_steps == 1000 and run.spec.training.optimizer.lr == 3e-4

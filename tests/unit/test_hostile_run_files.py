"""Run files are read as the API server would take them: bounded aliases, depth and size; strict keys and numbers."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import yaml

from llmtrain.api import SpecError, TrainingRun, parse_resource
from llmtrain.api.decoding import MAX_DEPTH, MAX_FILE_BYTES, MAX_OBJECT_BYTES, allowed_alias_ratio
from llmtrain.api.manifests import read_documents
from support.apiserver import admit


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: 9 ** levels values from about 500 bytes."""
    lines = ["apiVersion: llmtrain.dev/v1alpha1", "kind: DataSource", "metadata: {name: bomb}"]
    lines.append("a0: &a0 [" + ", ".join(["lol"] * 9) + "]")
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    lines.append(f"spec: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _refusal(path) -> str:
    with pytest.raises(SpecError) as caught:
        read_documents(path)
    assert caught.value.source == str(path)
    return str(caught.value)


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    text = _billion_laughs()
    assert len(text) < 600
    message = _refusal(_write(tmp_path, "bomb.yaml", text))
    assert "excessive aliasing" in message and "reuse fewer anchors" in message


def test_go_yaml_alias_budget():
    assert allowed_alias_ratio(1000) == allowed_alias_ratio(400_000) == 0.99
    assert allowed_alias_ratio(2_200_000) == pytest.approx(0.545)
    assert allowed_alias_ratio(4_000_000) == allowed_alias_ratio(10**9) == 0.10


def test_moderate_anchors_are_read_as_written(tmp_path, valid):
    text = (
        "defaults: &limits {cpu: '2', memory: 4Gi}\n"
        + "".join(f"r{i}: *limits\n" for i in range(200))
        + "".join(f"k{i}: v\n" for i in range(2000))
    )
    documents = read_documents(_write(tmp_path, "anchors.yaml", text))
    assert documents[0]["r199"] == {"cpu": "2", "memory": "4Gi"}


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    message = _refusal(_write(tmp_path, "cycle.yaml", "a: &loop [1, *loop]\n"))
    assert "line 1: alias *loop is inside its own anchor" in message


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", "line 1: nested deeper than"),
        ("deep-block.yaml", "".join(" " * i + "a:\n" for i in range(MAX_DEPTH + 5)) + " " * 120 + "b: 1\n", "nested"),
        ("deep.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "the JSON: nested deeper than"),
        ("deep-moderate.json", '{"a": ' + "[" * 500 + "]" * 500 + "}", "the JSON: nested deeper than"),
    ],
)
def test_deep_nesting_is_refused_clearly(tmp_path, name, text, where):
    message = _refusal(_write(tmp_path, name, text))
    assert where in message and f"{MAX_DEPTH} levels; flatten the structure" in message


def test_aliases_cannot_nest_deeper_than_the_limit(tmp_path):
    """Each anchor is shallow, but each alias adds its anchor's depth: the expanded value is too deep."""
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_DEPTH + 5)]
    message = _refusal(_write(tmp_path, "chain.yaml", "\n".join(lines) + "\n"))
    assert "nested deeper than" in message and "alias *a" in message


def test_nesting_within_the_limit_is_read(tmp_path):
    depth = MAX_DEPTH // 2
    documents = read_documents(_write(tmp_path, "ok.yaml", "a: " + "[" * depth + "]" * depth + "\n"))
    assert isinstance(documents[0]["a"], list)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: 2\na: 3\n", 'line 3: mapping key "a" already defined at line 1'),
        ("spec:\n  x: 1\n  y: 2\n  x: 1\n", 'line 4: mapping key "x" already defined at line 2'),
        ("a: {k: 1, k: 2}\n", 'line 1: mapping key "k" already defined at line 1'),
        ('{"a": 1, "b": {"c": 1, "c": 2}}', 'mapping key "c" already defined'),
    ],
)
def test_duplicate_keys_are_refused_as_kubectl_refuses_them(tmp_path, text, expected):
    message = _refusal(_write(tmp_path, "dup.yaml", text))
    assert expected in message and "remove one of them" in message


def test_the_same_key_in_different_mappings_is_fine(tmp_path):
    assert read_documents(_write(tmp_path, "ok.yaml", "a: {k: 1}\nb: {k: 2}\n")) == [{"a": {"k": 1}, "b": {"k": 2}}]


@pytest.mark.parametrize(
    ("name", "text", "shown"),
    [
        ("nan.yaml", "x: .nan\n", ".nan"),
        ("inf.yaml", "x: .inf\n", ".inf"),
        ("neg-inf.yaml", "x: [-.Inf]\n", "-.Inf"),
        ("tagged.yaml", "x: !!float nan\n", "nan"),
        ("overflow.yaml", "x: 1e400\n", "1e400"),
        ("nan.json", '{"x": NaN}', "NaN"),
        ("inf.json", '{"x": Infinity}', "Infinity"),
        ("neg-inf.json", '{"x": [-Infinity]}', "-Infinity"),
        ("overflow.json", '{"x": 1e400}', "1e400"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path, name, text, shown):
    message = _refusal(_write(tmp_path, name, text))
    assert f"{shown} is not a finite number" in message


@pytest.mark.parametrize("text", ["x: 9223372036854775808\n", "x: " + "9" * 5000 + "\n", '{"x": -9223372036854775809}'])
def test_integers_beyond_64_bits_are_refused(tmp_path, text):
    assert "outside the 64-bit integers" in _refusal(_write(tmp_path, "big.yaml", text))


def test_numbers_and_dates_read_as_kubectl_sends_them(tmp_path):
    text = "a: 2.0\nb: 3e-4\nc: 2024-01-01\nd: 2001-13-45\n"
    assert read_documents(_write(tmp_path, "ok.yaml", text)) == [
        {"a": 2, "b": 3e-4, "c": "2024-01-01", "d": "2001-13-45"}
    ]
    assert read_documents(_write(tmp_path, "ok.json", '{"a": 2.0, "b": 3e-4}')) == [{"a": 2, "b": 3e-4}]


def test_yaml_flow_mapping_is_still_yaml(tmp_path):
    assert read_documents(_write(tmp_path, "flow.yaml", "{kind: x, a: 1}\n")) == [{"kind": "x", "a": 1}]


@pytest.mark.parametrize(("field", "value"), [("memory", "-1Gi"), ("cpu", "-500m"), ("cpu", -2)])
def test_negative_quantities_are_refused(valid, field, value):
    valid["TrainingRun"]["spec"]["resources"] = {field: value}
    with pytest.raises(SpecError, match=f"spec.resources.{field}: must be a Kubernetes quantity, not negative"):
        parse_resource(valid["TrainingRun"])


@pytest.mark.parametrize(("kind", "value"), [("TrainingRun", -2), ("TrainingRun", "-1Gi"), ("ModelExport", -1)])
def test_the_crd_refuses_negative_quantities_too(valid, crds, kind, value):
    valid[kind]["spec"]["resources"] = {"cpu": value}
    assert [e for e in admit(crds[kind], valid[kind]) if e.startswith("spec.resources.cpu")]
    valid[kind]["spec"]["resources"] = {"cpu": abs(value) if isinstance(value, int) else value.lstrip("-")}
    assert admit(crds[kind], valid[kind]) == []


def test_non_negative_quantities_are_accepted(valid):
    valid["TrainingRun"]["spec"]["resources"] = {"memory": "+16Gi", "cpu": 0}
    run = parse_resource(valid["TrainingRun"])
    assert isinstance(run, TrainingRun) and run.spec.resources.cpu == "0"


def test_an_object_over_the_api_servers_limit_is_refused(tmp_path, valid):
    valid["DataSource"]["metadata"]["annotations"] = {"note": "x" * MAX_OBJECT_BYTES}
    path = _write(tmp_path, "big.yaml", yaml.safe_dump_all([valid["TrainingRun"], valid["DataSource"]]))
    message = _refusal(path)
    assert "DataSource/corpus: is " in message and "at most 1,572,864 bytes (1.5 MiB) per object" in message


def test_an_object_under_the_limit_is_read(tmp_path, valid):
    valid["DataSource"]["metadata"]["annotations"] = {"note": "x" * (MAX_OBJECT_BYTES - 4096)}
    assert len(read_documents(_write(tmp_path, "ok.json", json.dumps(valid["DataSource"])))) == 1


def test_a_file_over_the_limit_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    assert f"is larger than {MAX_FILE_BYTES // 1024**2} MiB" in _refusal(path)


class _EndlessStdin:
    """A stdin that never ends (like `yes | llmtrain validate -f -`): only a bounded read returns."""

    def __init__(self) -> None:
        self.buffer = self

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("stdin read without a bound")
        return b"a" * size


def test_stdin_is_read_with_a_bound(monkeypatch):
    monkeypatch.setattr("sys.stdin", _EndlessStdin())
    with pytest.raises(SpecError, match="<stdin>: is larger than"):
        read_documents("-")


def test_text_stdin_is_read_with_a_bound(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a" * (MAX_FILE_BYTES + 10)))
    with pytest.raises(SpecError, match="<stdin>: is larger than"):
        read_documents("-")


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("bomb.yaml", _billion_laughs(), "excessive aliasing"),
        ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than"),
    ],
)
def test_cli_refuses_hostile_files_with_exit_2_and_one_reason(tmp_path, name, text, reason):
    path = _write(tmp_path, name, text)
    result = subprocess.run(
        [sys.executable, "-m", "llmtrain.cli", "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert [line for line in result.stderr.splitlines() if reason in line]

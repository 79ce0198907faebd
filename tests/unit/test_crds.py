"""The CRDs: generated from the models, committed in sync, valid for the API server, sound."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from llmtrain.api import KINDS, crdgen
from support.apiserver import check_schema_is_sound, root_schema
from support.paths import ROOT


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_committed_crd_is_what_the_models_generate(kind):
    committed = (ROOT / "crds" / crdgen.file_name(kind)).read_text()
    assert committed == crdgen.render(kind), "crds/ is stale: run `make crds` and commit the result"


def test_crds_directory_holds_exactly_the_kinds():
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(crdgen.file_name(k) for k in KINDS)


def test_write_is_atomic_and_reproducible(tmp_path):
    first = [p.read_bytes() for p in crdgen.write(tmp_path)]
    second = [p.read_bytes() for p in crdgen.write(tmp_path)]
    assert first == second
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("version", ["1.29.0", "1.35.0"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_crd_passes_kubernetes_validate_strict(crds, kind, version):
    kubernetes_validate.validate(crds[kind.KIND], version, strict=True)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_schema_is_structural_with_valid_defaults_and_parsable_rules(crds, kind):
    assert check_schema_is_sound(root_schema(crds[kind.KIND])) == []


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_printer_columns_point_at_fields_of_their_type(crds, kind):
    schema = root_schema(crds[kind.KIND])
    for column in crds[kind.KIND]["spec"]["versions"][0]["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        field = _resolve(schema, column["jsonPath"])
        assert field is not None, f"{column['name']}: {column['jsonPath']} is not in the schema"
        expected = {"string": ("string", "array"), "integer": ("integer",), "number": ("number",)}[column["type"]]
        assert field["type"] in expected, column


def test_names_categories_and_short_names(crds):
    names = {k: c["spec"]["names"] for k, c in crds.items()}
    assert {k: n["shortNames"] for k, n in names.items()} == {
        "DataSource": ["ds"],
        "TrainingRun": ["tr"],
        "ModelExport": ["mex"],
    }
    assert all(n["categories"] == ["llmtrain"] for n in names.values())
    assert all(c["spec"]["scope"] == "Namespaced" for c in crds.values())
    assert all(c["spec"]["versions"][0]["subresources"] == {"status": {}} for c in crds.values())


def _undocumented(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if schema.get("description") else [path]
    for key, sub in schema.get("properties", {}).items():
        missing += _undocumented(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict) and schema["items"].get("type") == "object":
        missing += _undocumented(schema["items"], f"{path}[]")
    return missing


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.KIND)
def test_every_spec_and_status_field_is_described(crds, kind):
    schema = root_schema(crds[kind.KIND])
    assert _undocumented(schema["properties"]["spec"], "spec") == []
    assert _undocumented(schema["properties"]["status"], "status") == []


def test_conditions_are_a_map_keyed_by_type(crds):
    for crd in crds.values():
        conditions = root_schema(crd)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert "type" in conditions["items"]["required"]


def test_generator_refuses_types_it_cannot_make_structural():
    with pytest.raises(TypeError, match="unions other than Optional"):
        crdgen.type_schema(int | str)
    with pytest.raises(TypeError, match="map keys must be strings"):
        crdgen.type_schema(dict[int, str])


def test_crd_yaml_round_trips(crds):
    for kind in KINDS:
        assert yaml.safe_load(crdgen.render(kind)) == crds[kind.KIND]


def test_api_reference_is_in_sync():
    from llmtrain.api import docgen

    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == docgen.render(), "docs/api.md is stale: run `make crds` and commit the result"

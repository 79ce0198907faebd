"""What the Kubernetes API server does with a custom resource, done here without one.

Given a CRD's openAPIV3Schema: apply schema defaults, validate with strict field validation (unknown
fields are errors, as `kubectl apply` asks for), and evaluate every `x-kubernetes-validations` CEL
rule with a real CEL implementation (cel-python, whose `matches` is RE2 as in Kubernetes), transition
rules (`oldSelf`) included when an old object is given.
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
from jsonschema.validators import Draft4Validator


def root_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill schema defaults into a copy of `value`, recursively, as the API server does."""
    value = copy.deepcopy(value)
    _default_into(schema, value)
    return value


def _default_into(schema: dict[str, Any], value: Any) -> None:
    """Defaults for absent fields, and for explicit nulls of non-nullable fields; other such nulls are
    pruned (the API server's PruneNonNullableNullsWithoutDefaults: `region: null` means no region)."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            sub = schema.get("properties", {}).get(key)
            if sub is not None and not sub.get("nullable") and "default" not in sub:
                del value[key]
        for key, sub in schema.get("properties", {}).items():
            if (key not in value or (value[key] is None and not sub.get("nullable"))) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default_into(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                _default_into(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default_into(schema["items"], item)


def to_jsonschema(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 structural schema as draft-4 JSON Schema, unknown fields forbidden."""
    out: dict[str, Any] = {}
    for key, sub in schema.items():
        if key == "properties":
            out[key] = {k: to_jsonschema(v) for k, v in sub.items()}
        elif key in ("items", "additionalProperties") and isinstance(sub, dict):
            out[key] = to_jsonschema(sub)
        elif key.startswith("x-kubernetes-") or key in ("default", "description", "format"):
            continue
        else:
            out[key] = sub
    if schema.get("x-kubernetes-int-or-string"):
        out = {
            "anyOf": [
                {"type": "integer", **({"minimum": out["minimum"]} if "minimum" in out else {})},
                {"type": "string", **({"pattern": out["pattern"]} if "pattern" in out else {})},
            ]
        }
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _cel_value(schema: dict[str, Any], value: Any) -> Any:
    """Coerce JSON to the types the schema declares (an integer written for a number is a double)."""
    kind = schema.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return {k: _cel_value(props.get(k, extra), v) for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [_cel_value(schema.get("items", {}), v) for v in value]
    return value


_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _holds(rule: str, value: Any, old: Any) -> bool:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    activation = {"self": celpy.json_to_cel(value)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = _PROGRAMS[rule].evaluate(activation)
    except celpy.CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def cel_errors(schema: dict[str, Any], value: Any, old: Any = None, path: str = "") -> list[str]:
    """Every failing CEL rule below `schema` as 'path: message' (fieldPath appended)."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue  # the API server skips transition rules on create
        if not _holds(rule["rule"], _cel_value(schema, value), _cel_value(schema, old) if transition else None):
            errors.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                old_sub = old.get(key) if isinstance(old, dict) else None
                errors += cel_errors(sub, value[key], old_sub, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += cel_errors(schema["items"], item, None, f"{path}[{index}]")
    return errors


def admit(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """The API server's answer to a create (or, with `old`, an update): [] when accepted, else errors."""
    schema = root_schema(crd)
    obj = apply_defaults(schema, obj)
    old = apply_defaults(schema, old) if old is not None else None
    validator = Draft4Validator(to_jsonschema(schema))
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if errors:
        return errors  # the API server runs CEL only on schema-valid objects
    return cel_errors(schema, obj, old)


def check_schema_is_sound(schema: dict[str, Any], path: str = "") -> list[str]:
    """Structural-schema rules the API server enforces on a CRD, plus defaults that validate."""
    problems: list[str] = []
    if "type" not in schema and not schema.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: no type")
    for banned in ("$ref", "anyOf", "oneOf", "allOf", "not", "definitions"):
        if banned in schema:
            problems.append(f"{path}: {banned} is not structural")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties together")
    if "default" in schema:
        try:
            sub = to_jsonschema(schema)
            jsonschema.validate(apply_defaults(schema, schema["default"]), sub, cls=Draft4Validator)
        except jsonschema.ValidationError as exc:
            problems.append(f"{path}: default {schema['default']!r} is invalid: {exc.message}")
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            _ENV.compile(rule["rule"])
        except celpy.CELParseError as exc:
            problems.append(f"{path}: CEL rule does not parse: {rule['rule']}: {exc}")
    for key, sub in schema.get("properties", {}).items():
        problems += check_schema_is_sound(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems += check_schema_is_sound(schema[key], f"{path}.{key}")
    return problems

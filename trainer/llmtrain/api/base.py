"""Building blocks of every API type: the model base, CEL rules, friendly patterns.

A rule is written once. `CelRule` and `Matches` are emitted into the CRD by `crdgen` (as
`x-kubernetes-validations` and `pattern`) and enforced by pydantic here, so the API server and
the local runner reject the same objects with the same message.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError, core_schema

#: The pydantic error type of every rule defined here; `errors.py` reads its `field_path`.
RULE_ERROR = "llmtrain_rule"


def rule_error(message: str, field_path: str = "") -> PydanticCustomError:
    """An error with `message`, reported at the current location plus `field_path` (".a.b")."""
    return PydanticCustomError(RULE_ERROR, "{message}", {"message": message, "field_path": field_path})


@functools.cache
def _cel_program(rule: str) -> Any:
    import celpy  # imported on first use: `import llmtrain` stays light

    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_holds(rule: str, value: Any, old_value: Any = None) -> bool:
    """Evaluate a CEL rule on a JSON-like `self` (and `oldSelf`); an evaluation error is a failure."""
    import celpy

    activation = {"self": celpy.json_to_cel(value)}
    if old_value is not None:
        activation["oldSelf"] = celpy.json_to_cel(old_value)
    try:
        result = _cel_program(rule).evaluate(activation)
    except celpy.CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


@dataclass(frozen=True)
class CelRule:
    """A CEL rule on a model (class attribute `cel_rules`) or a field (`Annotated` metadata).

    `field_path` (".heads") names the field the error is reported on, as the API server does.
    Transition rules (those using `oldSelf`) are enforced by the API server only: a lone object
    has no old version.
    """

    rule: str
    message: str
    field_path: str = ""

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.rule

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out

    def check(self, value: Any) -> None:
        if not self.is_transition and not cel_holds(self.rule, value):
            raise rule_error(self.message, self.field_path)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: Any) -> Any:
            self.check(value)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))


@dataclass(frozen=True)
class Matches:
    """A regular expression a string must match, with a message saying what is allowed.

    Emitted as the CRD's `pattern` (RE2 there; write patterns both engines read alike).
    """

    pattern: str
    message: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        compiled = re.compile(self.pattern)

        def validate(value: str) -> str:
            if not compiled.search(value):
                raise rule_error(self.message)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))


@dataclass(frozen=True)
class IntOrString:
    """Marks a string field that also accepts an integer (Kubernetes quantities); `minimum` bounds the
    integer form in the CRD (a string is checked by its pattern, which the API server applies to strings only)."""

    minimum: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def to_string(value: Any) -> Any:
            return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

        return core_schema.no_info_before_validator_function(to_string, handler(source))


@dataclass(frozen=True)
class ListType:
    """The CRD's `x-kubernetes-list-type` (and map keys) for a list field."""

    list_type: str  # "atomic" | "set" | "map"
    map_keys: tuple[str, ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        schema = handler(source)
        if self.list_type == "set":

            def unique(value: list[Any]) -> list[Any]:
                if len(set(map(repr, value))) != len(value):
                    raise rule_error("must not repeat an entry")
                return value

            return core_schema.no_info_after_validator_function(unique, schema)
        return schema


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, CEL rules enforced.

    `secret_hints` maps a field name users might try (say `secretAccessKey`) to the way to pass
    that value through a Secret instead; such a field is refused with that hint.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,  # JSON's types, as the API server checks them: no "5" for 5, no false for 0.0
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()
    secret_hints: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A declared field set to null is absent, as the API server treats it (no field here is nullable:
        it prunes the null, or applies the default); an unknown field stays, to be refused."""
        if isinstance(data, dict) and None in data.values():
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            return {k: v for k, v in data.items() if v is not None or k not in known}
        return data

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, hint in cls.secret_hints.items():
                if key in data:
                    raise rule_error(f"credentials must not be written into the spec; {hint}", f".{key}")
        return data

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        if self.cel_rules:
            wire = self.to_wire()
            for rule in self.cel_rules:
                rule.check(wire)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, defaults filled, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

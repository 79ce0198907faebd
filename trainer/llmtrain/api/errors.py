"""Turns pydantic's errors into `spec.training.maxSteps: must be > 0` lines that name the fix."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import BadInput
from .base import RULE_ERROR


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an object: where (`spec.sources[0].s3`) and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(BadInput, ValueError):
    """A resource that cannot be accepted; `problems` lists every field at fault."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(map(str, problems)))

    @classmethod
    def from_validation_error(cls, error: ValidationError, model: type[BaseModel], source: str = "") -> SpecError:
        return cls([_problem(e, model) for e in error.errors()], source)


def _join(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problem(error: Any, model: type[BaseModel]) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == RULE_ERROR:
        extra = tuple(p for p in ctx.get("field_path", "").split(".") if p)
        return Problem(_join(loc + extra), ctx["message"])
    if kind == "extra_forbidden":
        return Problem(_join(loc), _unknown_field(model, loc))
    return Problem(_join(loc), _message(kind, ctx, error))


def _message(kind: str, ctx: dict[str, Any], error: Any) -> str:
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    messages = {
        "missing": "required",
        "greater_than": f"must be > {ctx.get('gt')}{shown}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}{shown}",
        "less_than": f"must be < {ctx.get('lt')}{shown}",
        "less_than_equal": f"must be <= {ctx.get('le')}{shown}",
        "literal_error": f"must be one of {ctx.get('expected')} (got {value!r})",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping of fields",
        "model_attributes_type": "must be a mapping of fields",
        "datetime_parsing": "must be an RFC 3339 time",
        "datetime_type": "must be an RFC 3339 time",
    }
    if kind in messages:
        return messages[kind]
    if kind in ("too_short", "too_long"):
        unit = "item(s)"
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"must have at {'least' if kind == 'too_short' else 'most'} {bound} {unit}"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} character(s)"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    return str(error["msg"])


def _unknown_field(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    owner = _model_at(model, loc[:-1])
    if owner is None:
        return "unknown field"
    allowed = [f.alias or n for n, f in owner.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field; {hint}allowed here: {', '.join(allowed)}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class found by following `loc` (aliases, list indices, map keys) from `model`."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip Optional and Annotated."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp

"""Kubernetes-style conditions: keyed by type, lastTransitionTime kept while the status holds."""

from __future__ import annotations

from typing import Any


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> None:
    """Insert or update one condition in place."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    new = {"type": type_, "status": value, "reason": reason, "message": message[:32768], "lastTransitionTime": now}
    if generation is not None:
        new["observedGeneration"] = generation
    for index, old in enumerate(conditions):
        if old.get("type") == type_:
            if old.get("status") == value and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            conditions[index] = new
            return
    conditions.append(new)


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]] | None, type_: str) -> bool:
    found = get_condition(conditions, type_)
    return found is not None and found.get("status") == "True"

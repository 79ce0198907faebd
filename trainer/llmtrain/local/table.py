"""`kubectl get`-style tables from the CRDs' own printer columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..api import KINDS, Resource

ALIASES: dict[str, type[Resource]] = {}
for _kind in KINDS:
    for _alias in (_kind.KIND.lower(), _kind.PLURAL, *_kind.SHORT_NAMES):
        ALIASES[_alias] = _kind


def lookup(path: str, obj: dict[str, Any]) -> Any:
    """A printer column's simple JSONPath (`.status.stats.documentsOut`)."""
    value: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def age(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def cell(value: Any, type_: str) -> str:
    if value is None:
        return "<none>" if type_ != "number" else ""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if type_ == "number" and isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rows(kind: type[Resource], objects: list[dict[str, Any]], wide: bool = False) -> list[list[str]]:
    columns = [c for c in kind.PRINTER_COLUMNS if wide or not c.priority]
    out = [["NAME", *(c.name.upper() for c in columns)]]
    for obj in objects:
        row = [obj["metadata"]["name"]]
        for column in columns:
            value = lookup(column.json_path, obj)
            row.append(age(value) if column.type == "date" else cell(value, column.type))
        out.append(row)
    return out


def render(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in table)

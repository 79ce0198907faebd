"""A JSON document that must be an object (a config.json, a meta.json), or an error naming where it is."""

from __future__ import annotations

import json
from typing import Any


def parse_object(raw: bytes | str, where: str, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in `raw`; `error` naming `where` when it is not valid JSON or not an object."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise error(f"{where}: not a JSON object")
    return value

"""Credentials, read from Secrets mounted as files; never from the spec, never logged.

Contract with the operator (and the local runner): every Secret a resource references is mounted
read-only at `$LLMTRAIN_SECRETS_DIR/<secret-name>/<key>` (default `/var/run/secrets/llmtrain`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BadInput

SECRETS_DIR_ENV = "LLMTRAIN_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/var/run/secrets/llmtrain"


class MissingSecret(BadInput, LookupError):
    """A referenced Secret key is not mounted."""


def secrets_dir() -> Path:
    return Path(os.environ.get(SECRETS_DIR_ENV, DEFAULT_SECRETS_DIR))


def read_secret(name: str, key: str) -> str:
    """The value of `key` in Secret `name`, stripped of a trailing newline."""
    path = secrets_dir() / name / key
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise MissingSecret(
            f"Secret {name!r} has no key {key!r} mounted at {path.parent}; create the Secret with that key"
        ) from None


def read_optional(name: str, key: str) -> str | None:
    try:
        return read_secret(name, key)
    except MissingSecret:
        return None

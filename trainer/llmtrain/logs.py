"""Two log streams on stderr: the system stream (JSON lines) and the audit stream of lifecycle events.

Audit events (`stream: audit`: started, finished, checkpoint saved, alert...) are what the operator
turns into Kubernetes Events. A progress line is drawn only when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level: int = logging.INFO) -> None:
    """JSON lines on stderr for every llmtrain logger (idempotent)."""
    root = logging.getLogger("llmtrain")
    if not any(getattr(h, "_llmtrain", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._llmtrain = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def audit(event: str, **fields: Any) -> None:
    """A lifecycle event on the audit stream (a field named like a LogRecord attribute gets a `_` suffix)."""
    safe = {(f"{key}_" if key in _RESERVED else key): value for key, value in fields.items()}
    logging.getLogger("llmtrain.audit").info(event, extra={"stream": "audit", "event": event, **safe})


def human(line: str) -> None:
    """A plain progress line for a person at a terminal, or anywhere with LLMTRAIN_HUMAN_LOGS=1 (the JSON
    stream carries the same figures)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[2m{time.strftime('%H:%M:%S')}\x1b[0m {line}\n")
    elif os.environ.get("LLMTRAIN_HUMAN_LOGS") == "1":
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {line}\n")
    else:
        return
    sys.stderr.flush()


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, label: str, total: int | None = None, unit: str = "docs") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.count = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self.enabled = sys.stderr.isatty()

    def advance(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self._drawn > 0.2:
            self._drawn = now
            rate = self.count / max(now - self.started, 1e-9)
            of = f"/{self.total}" if self.total else ""
            sys.stderr.write(f"\r{self.label}: {self.count}{of} {self.unit} ({rate:,.0f}/s)\x1b[K")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()

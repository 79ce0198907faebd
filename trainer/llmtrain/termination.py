"""The workload's last word to Kubernetes: a compact JSON report in the container's termination message.

The kubelet copies `terminationMessagePath` (at most 4096 bytes) into the pod's status, where the
operator reads it: ingest statistics, export artifacts, or the error that failed the pod. No API access
is needed. The path comes from `$LLMTRAIN_TERMINATION_LOG`; nothing is written when it is unset.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

ENV = "LLMTRAIN_TERMINATION_LOG"
LIMIT = 4096


def _encode(report: dict[str, Any]) -> bytes:
    return json.dumps(report, separators=(",", ":"), default=str).encode()


def compact(report: dict[str, Any]) -> bytes:
    """The report within LIMIT bytes: drop bulky details first, then cut the error message."""
    data = _encode(report)
    if len(data) <= LIMIT:
        return data
    slim = dict(report)
    for artifact in slim.get("artifacts") or []:
        if isinstance(artifact, dict) and isinstance(artifact.get("validation"), dict):
            artifact["validation"] = {"passed": artifact["validation"].get("passed", False)}
    if isinstance(slim.get("stats"), dict):
        slim["stats"] = {k: v for k, v in slim["stats"].items() if k not in ("seconds", "rejected")}
    data = _encode(slim)
    if len(data) <= LIMIT:
        return data
    error = str(report.get("error", ""))
    return _encode({"error": error[: LIMIT - 200], "exitCode": report.get("exitCode"), "truncated": True})


def write(report: dict[str, Any]) -> None:
    """Write the termination message, atomically; a failure to write never fails the workload."""
    target = os.environ.get(ENV)
    if not target:
        return
    path = Path(target)
    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(compact(report))
        os.replace(tmp, path)
    except OSError:  # /dev/termination-log is a file the kubelet mounts (a rename onto it fails: EBUSY)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.write_bytes(compact(report))

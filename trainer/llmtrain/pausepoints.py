"""Named pause points inside the workloads' writes, for the tests that kill or fault a workload there.

Inert unless a test sets `LLMTRAIN_TEST_PAUSE_AT` to a point's name (e.g. `checkpoint-meta:16`, the
checkpoint of step 16 between its shards and its meta.json) and `LLMTRAIN_TEST_PAUSE_FILE` to a path.
On reaching that point the workload creates the file (holding its pid) and waits while it exists: the
test then kills the process mid-write, or does what it must (stops a server) and deletes the file to
let the workload go on. A pause never outlasts `MAX_PAUSE_SECONDS`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT_ENV = "LLMTRAIN_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "LLMTRAIN_TEST_PAUSE_FILE"
MAX_PAUSE_SECONDS = 300.0


def pause_point(name: str) -> None:
    """Wait here while the pause file exists, if (and only if) a test asked to pause at `name`."""
    if os.environ.get(PAUSE_AT_ENV) != name:
        return
    target = os.environ.get(PAUSE_FILE_ENV)
    if not target:
        raise RuntimeError(f"{PAUSE_AT_ENV}={name} needs {PAUSE_FILE_ENV}: the file to create while paused")
    marker = Path(target)
    temporary = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    temporary.write_text(str(os.getpid()))
    temporary.rename(marker)  # the test never sees a half-written pid
    deadline = time.monotonic() + MAX_PAUSE_SECONDS
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)

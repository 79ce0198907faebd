"""`llmtrain launch -- <torchrun args>`: torchrun as a pod's main process, keeping the exit code contract.

torchrun exits 1 whenever a worker fails, whatever the worker's exit code, so a Job's
`podFailurePolicy` could not tell bad input (2) or divergence (3) from a retryable failure. The
launcher runs torchrun, forwards SIGTERM/SIGINT to it, and on failure exits with the code the worker
wrote to the termination message (2, 3 or 75) when there is one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import exitcodes, termination

CONTRACT = (exitcodes.BAD_INPUT, exitcodes.DIVERGED, exitcodes.RETRYABLE)


def worker_exit_code(path: str | None) -> int | None:
    if not path:
        return None
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    code = report.get("exitCode") if isinstance(report, dict) else None
    return code if code in CONTRACT else None


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun) if torchrun.exists() else "torchrun", *argv]
    log_path = os.environ.get(termination.ENV)
    if log_path:  # only this attempt's report counts. Emptied, not unlinked: in a container the kubelet
        with contextlib.suppress(FileNotFoundError):  # bind-mounts the file (unlink: EBUSY, found on the
            Path(log_path).write_bytes(b"")  # real control plane)
    child = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    code = child.wait()
    if code == 0:
        return 0
    return worker_exit_code(log_path) or (128 - code if code < 0 else code)

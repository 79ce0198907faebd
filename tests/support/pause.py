"""Stop a workload at one of its named pause points (`llmtrain.pausepoints`) and act there: kill it
mid-write, or fault a server before it may go on. The workload's own progress decides when, not a clock."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from llmtrain.pausepoints import PAUSE_AT_ENV, PAUSE_FILE_ENV


def pause_env(point: str, marker: Path) -> dict[str, str]:
    """The environment that makes a workload wait at `point` while `marker` exists."""
    return {PAUSE_AT_ENV: point, PAUSE_FILE_ENV: str(marker)}


def wait_until_paused(process: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    """Until the workload announces it is waiting at its pause point; fails if it exits or never gets there."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the workload exited ({process.returncode}) before its pause point")
        if time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=30)
            raise TimeoutError(f"the workload did not reach its pause point in {timeout} s")
        time.sleep(0.01)


def kill_paused(process: subprocess.Popen, marker: Path) -> None:
    """SIGKILL the workload while it waits at its pause point (so the kill lands mid-write)."""
    assert marker.exists() and process.poll() is None, "the workload is not paused"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def release(marker: Path) -> None:
    """Let the paused workload go on."""
    marker.unlink()

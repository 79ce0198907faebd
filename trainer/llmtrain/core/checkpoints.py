"""When a TrainingRun's checkpoint is there to be read: the one rule a ModelExport (the checkpoint it
exports) and a TrainingRun (the checkpoint `spec.init.trainingRunRef` starts from) both wait on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: Which checkpoint of a run: its latest, its best (lowest validation loss), or a given step.
Select = Literal["latest", "best", "step"]


@dataclass(frozen=True)
class Waiting:
    """Why the checkpoint is not there yet: the run is missing, failed first, or has not got there."""

    state: Literal["missing", "failed", "waiting"]
    message: str


def ready(run_status: dict[str, Any], checkpoint: Select, step: int | None) -> bool:
    """A given step is there once the run's latest checkpoint reached it; latest and best once the run
    succeeded (until then either may still change)."""
    if checkpoint == "step":
        latest = (run_status.get("latestCheckpoint") or {}).get("step")
        return latest is not None and latest >= (step or 0)
    return run_status.get("phase") == "Succeeded"


def wait(found: dict[str, Any] | None, name: str, checkpoint: Select, step: int | None) -> Waiting | None:
    """None when TrainingRun `name` (`found`, None when it does not exist) has the checkpoint; otherwise
    what it waits for, naming the run."""
    if found is None:
        return Waiting("missing", f"TrainingRun {name} does not exist yet")
    run_status = found.get("status") or {}
    if ready(run_status, checkpoint, step):
        return None
    if run_status.get("phase") == "Failed":
        return Waiting("failed", f"TrainingRun {name} failed: {run_status.get('message', '')}")
    want = f"step {step}" if checkpoint == "step" else "the run to finish"
    at = run_status.get("progress") or "no progress yet"
    return Waiting("waiting", f"waiting for TrainingRun {name}: {want} (at {at})")

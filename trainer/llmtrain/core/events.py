"""Every status transition also becomes a Kubernetes Event: derived by comparing old and new status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def transitions(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Event]:
    old = old or {}
    events: list[Event] = []
    if new.get("phase") != old.get("phase") or (new.get("phase") == "Pending" and _reason(new) != _reason(old)):
        kind = "Warning" if new.get("phase") == "Failed" or _reason(new) in _WARNING_REASONS else "Normal"
        events.append(Event(kind, _reason(new) or str(new.get("phase")), new.get("message") or ""))
    if new.get("stage") and new.get("stage") != old.get("stage"):  # a DataSource's next stage began
        parts = (new.get("progress") or "").partition("/")[2]
        events.append(Event("Normal", f"{new['stage']}Started", f"{new['stage']} stage: {parts} part(s)"))
    old_ckpt, new_ckpt = old.get("latestCheckpoint") or {}, new.get("latestCheckpoint") or {}
    if new_ckpt.get("step") is not None and new_ckpt.get("step") != old_ckpt.get("step"):
        events.append(Event("Normal", "CheckpointSaved", f"step {new_ckpt['step']} at {new_ckpt.get('uri')}"))
    if (new.get("restarts") or 0) > (old.get("restarts") or 0):
        failure = (new.get("lastFailure") or {}).get("message", "")
        events.append(
            Event(
                "Warning",
                "Restarted",
                f"restart {new['restarts']}, resuming from the latest checkpoint if any: {failure}".rstrip(": "),
            )
        )
    seen = {(a.get("type"), a.get("step"), a.get("time")) for a in old.get("alerts") or []}
    for alert in new.get("alerts") or []:
        if (alert.get("type"), alert.get("step"), alert.get("time")) not in seen:
            events.append(Event("Warning", alert["type"], alert.get("message", "")))
    return events


_WARNING_REASONS = {
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "Unschedulable",
    "CreateContainerConfigError",
    "CrashLoopBackOff",
    "TrainingRunFailed",
    "DataSourceFailed",
    "InitRunFailed",
    "InitExportFailed",
}


def _reason(status: dict[str, Any]) -> str | None:
    summary = next((c for c in status.get("conditions") or [] if c.get("type") in ("Ready", "Succeeded")), None)
    return summary.get("reason") if summary else None

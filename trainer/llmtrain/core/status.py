"""The status every kind shares: phase, message, conditions with their transition times, start and
completion times, the failure. Each kind's module extends `StatusBuilder` with the fields it owns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .conditions import set_condition
from .diagnosis import Finding
from .progress import STATUS_FIGURES

TERMINAL = ("Succeeded", "Failed")
#: A DataSource stage's figures that change as its parts finish (`progress` and `eta` are shared).
STAGE_FIGURES = frozenset(["documentsPerSecond"])


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class StatusBuilder:
    """Accumulates a status: phase, message, conditions with transition times kept, and the summary
    condition (`SUMMARY`: Ready for a DataSource, Succeeded for the others)."""

    SUMMARY = "Succeeded"

    def __init__(self, old: dict[str, Any] | None, generation: int | None, now: datetime) -> None:
        self.old = old or {}
        self.moment = now
        self.now, self.generation = iso(now), generation
        self.status: dict[str, Any] = {
            k: v for k, v in self.old.items() if k not in ("conditions", "phase", "message", "failure")
        }
        self.status["conditions"] = [dict(c) for c in self.old.get("conditions") or []]
        self.status["observedGeneration"] = generation

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        set_condition(self.status["conditions"], type_, status, reason, message, self.now, self.generation)

    def phase(self, phase: str, reason: str, message: str) -> None:
        self.status["phase"] = phase
        self.status["message"] = message
        done = phase == "Succeeded"
        self.condition(self.SUMMARY, done, reason, message)
        self.condition("Running", phase == "Running", reason if phase != "Running" else "Running", message)
        self.condition(
            "Failed",
            phase == "Failed",
            reason if phase == "Failed" else "NotFailed",
            message if phase == "Failed" else "",
        )
        if phase == "Running" and not self.status.get("startTime"):
            self.status["startTime"] = self.now
        if phase in TERMINAL:
            self.status.setdefault("completionTime", self.now)
        else:
            self.status.pop("completionTime", None)

    def fail(self, finding: Finding) -> None:
        self.phase("Failed", finding.reason, finding.message)
        self.status["failure"] = finding.to_status()

    def waiting_for(self, reason: str, message: str) -> None:
        self.phase("Pending", reason, message)

    def done(self) -> dict[str, Any]:
        return self.status


def progress_only(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether old and new differ only in progress figures (so the write may wait for the throttle)."""
    old = old or {}
    keys = (set(old) | set(new)) - STATUS_FIGURES - STAGE_FIGURES
    return all(old.get(k) == new.get(k) for k in keys)

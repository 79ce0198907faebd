"""What a reconcile reads and what it decides: `Observed` in, `Plan` out (the shells do the I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import Event

#: A child or dependency of a resource, in the resource's namespace: (kind, name).
ChildKey = tuple[str, str]


@dataclass
class Observed:
    """What the shell read: the resource's children and pods, the resources it depends on, progress."""

    children: dict[ChildKey, dict[str, Any]] = field(default_factory=dict)
    #: objects with a child's name that a previous resource of the same kind and name owns (deleted before
    #: the garbage collector got to them, or created in a race with that deletion): never used
    leftovers: dict[ChildKey, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    dependencies: dict[ChildKey, dict[str, Any]] = field(default_factory=dict)
    #: the trainer's progress report as the pod wrote it (TrainingRun only); parsed by the core
    progress: dict[str, Any] | None = None
    #: Warning Events about the resource's Jobs whose pods are missing (`jobs.missing_pods`): the Job
    #: controller's FailedCreate says why the API server refused a pod
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Action:
    """One API call: create/update an object, patch one, or delete one (propagation Background)."""

    verb: str  # create | update | patch | delete
    object: dict[str, Any]
    patch: dict[str, Any] | None = None

    @property
    def key(self) -> ChildKey:
        return self.object["kind"], self.object["metadata"]["name"]


@dataclass
class Plan:
    actions: list[Action]
    status: dict[str, Any]
    events: list[Event]
    #: Children the shell should read next time (so it never has to guess names).
    watch: list[ChildKey] = field(default_factory=list)
    #: Seconds after which to reconcile again even if nothing changes (a stall or pending deadline
    #: falls due; the shell's status throttle adds its own); None: only when something changes.
    requeue_after: float | None = None


@dataclass
class Outcome:
    """What one kind's logic decided: the children it wants, the ones to delete, when to look again."""

    desired: list[dict[str, Any]] = field(default_factory=list)
    deletions: list[dict[str, Any]] = field(default_factory=list)
    requeue_after: float | None = None


def sooner(*delays: float | None) -> float | None:
    """The earliest of the delays that are set."""
    known = [delay for delay in delays if delay is not None]
    return min(known) if known else None

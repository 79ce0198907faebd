"""reconcile(resource, observed, context, now) -> Plan: the children to create, update or delete, the
status to write, the Events to post and when to look again. Level-based and idempotent: the same world
gives the same plan. What a kind wants lives in its module (`datasource`, `trainingrun`, `modelexport`);
this module is the generic part: dispatch by kind, the terminal-phase guard, and the diff from the
children a kind wants to the API calls that get there."""

from __future__ import annotations

from datetime import datetime
from types import ModuleType
from typing import Any

from ..api import SpecError
from . import datasource, diagnosis, modelexport, naming, parsed, trainingrun, uris
from .context import Context
from .diagnosis import Finding
from .events import transitions
from .plan import Action, ChildKey, Observed, Outcome, Plan
from .status import TERMINAL

__all__ = ["TERMINAL", "Action", "Observed", "Plan", "child_keys", "dependency_keys", "reconcile"]

#: Each kind's logic: KIND, Status, child_keys(body), dependency_keys(body, found), reconcile(...).
KINDS: dict[str, ModuleType] = {module.KIND: module for module in (datasource, trainingrun, modelexport)}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SUSPEND_ANNOTATION = "llmtrain.dev/suspend"


def child_keys(body: dict[str, Any]) -> list[ChildKey]:
    """Every child a resource may own, for the shell to read before reconciling."""
    return KINDS[body["kind"]].child_keys(body)


def dependency_keys(body: dict[str, Any], found: dict[ChildKey, dict[str, Any]] | None = None) -> list[ChildKey]:
    """Resources this one reads; call again with what was found (an export's TrainingRun names its DataSource)."""
    return KINDS[body["kind"]].dependency_keys(body, found)


def reconcile(body: dict[str, Any], observed: Observed, ctx: Context, now: datetime) -> Plan:
    """The plan for one resource. Never raises on a resource the API server accepted."""
    old = body.get("status") or {}
    generation = body["metadata"].get("generation")
    logic = KINDS[body["kind"]]
    status = logic.Status(old, generation, now)
    outcome = Outcome()
    try:
        outcome = logic.reconcile(body, parsed.resource(body), observed, ctx, status, now)
    except (SpecError, uris.PlacementError) as exc:
        message = str(exc) if isinstance(exc, uris.PlacementError) else "; ".join(map(str, exc.problems))
        status.fail(Finding("InvalidSpec", message or str(exc), permanent=True))
        outcome = Outcome()
    new = status.done()
    if old.get("phase") in TERMINAL and new.get("phase") not in TERMINAL and _same_generation(old, generation):
        new = old  # a finished run whose Job disappeared (TTL, a person) is not run again
        outcome = Outcome()
    actions = _actions(outcome.desired, observed) + [Action("delete", d) for d in outcome.deletions]
    if observed.leftovers:  # removed first (a Job must not read an old spec ConfigMap); then created anew
        actions = [Action("delete", obj) for obj in observed.leftovers.values()]
    return Plan(actions, new, transitions(old, new), child_keys(body), outcome.requeue_after)


def _same_generation(old: dict[str, Any], generation: int | None) -> bool:
    return old.get("observedGeneration") == generation


def _actions(desired: list[dict[str, Any]], observed: Observed) -> list[Action]:
    """Create what is missing; update changed ConfigMaps, Services and RBAC; patch a Job's suspend; Jobs
    whose pod template changed are deleted by the kind's logic (their templates are immutable). Labels the
    operator set are restored: it finds its children by them."""
    out: list[Action] = []
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        found = observed.children.get(key)
        labels = _missing_labels(found, obj) if found is not None else {}
        if found is None:
            out.append(Action("create", obj))
        elif obj["kind"] == "Job":
            suspend = _suspend_patch(found, obj)
            patch = ({"spec": {"suspend": suspend}} if suspend is not None else {}) | (
                {"metadata": {"labels": labels}} if labels else {}
            )
            if patch:
                out.append(Action("patch", obj, patch))
        elif obj["kind"] == "ConfigMap" and key[1].endswith("-progress"):
            if labels:  # the trainer writes its data: only the labels are put back
                out.append(Action("patch", obj, {"metadata": {"labels": labels}}))
        elif (
            labels
            or any(found.get(k) != obj.get(k) for k in ("data", "rules", "subjects", "roleRef"))
            or (obj["kind"] == "Service" and found.get("spec", {}).get("selector") != obj["spec"]["selector"])
        ):
            out.append(Action("update", obj))
    return out


def _missing_labels(found: dict[str, Any], want: dict[str, Any]) -> dict[str, str]:
    """The labels the operator finds its children by (managed-by, owner) that a child lost or had changed;
    its other labels, and labels others added, are left alone."""
    have = found.get("metadata", {}).get("labels") or {}
    wanted = want["metadata"].get("labels") or {}
    return {k: v for k, v in wanted.items() if k in naming.IDENTITY_LABELS and have.get(k) != v}


def _suspend_patch(found: dict[str, Any], want: dict[str, Any]) -> bool | None:
    """The suspend value to patch onto an existing Job, if any. A queued Job (Kueue) is created suspended
    and Kueue admits it by unsuspending it: the operator then only suspends it again when the spec asks."""
    have, wanted = bool(found.get("spec", {}).get("suspend")), bool(want["spec"].get("suspend"))
    finished = diagnosis.job_condition(found, "Complete") or diagnosis.job_condition(found, "Failed")
    if have == wanted or finished:
        return None
    if QUEUE_LABEL in (want["metadata"].get("labels") or {}):
        asked = (want["metadata"].get("annotations") or {}).get(SUSPEND_ANNOTATION) == "true"
        return True if asked and not have else None
    return wanted

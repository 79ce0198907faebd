"""Reconciler: one pass over one resource through a Store, with throttled status writes."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..core import Context, Observed, Plan, jobs, naming, reconcile
from ..core.plan import sooner
from ..core.reconcile import TERMINAL, child_keys, dependency_keys
from ..core.status import progress_only
from ..core.trainingrun import progress_report
from .store import Conflict, NotFound, Store

log = logging.getLogger("llmtrain.control")


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from old to new status (keys that disappeared are set to null)."""
    patch = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


#: A resource as the shells name it: (kind, namespace, name).
ResourceKey = tuple[str, str, str]


class Reconciler:
    """Reads a resource's world, calls the core, applies the plan. Safe to call from many threads.

    Status writes that carry only progress figures are throttled to one per `ctx.status_interval` per
    resource; a write held back makes the returned plan's `requeue_after` no later than the moment it may
    be made, so the shell's next pass writes it (a run's last report is never lost)."""

    def __init__(
        self,
        store: Store,
        ctx: Context,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_plan: Callable[[dict[str, Any], Plan, bool], None] | None = None,
    ) -> None:
        self.store, self.ctx, self.clock, self.on_plan = store, ctx, clock, on_plan
        #: when each resource's status was last written (time.monotonic())
        self._written: dict[ResourceKey, float] = {}
        self._locks: dict[ResourceKey, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: ResourceKey) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def observe(self, body: dict[str, Any], store: Store | None = None) -> Observed:
        store = store or self.store
        namespace, name, kind = body["metadata"]["namespace"], body["metadata"]["name"], body["kind"]
        observed = Observed()
        for child_kind, child_name in child_keys(body):
            found = store.get(child_kind, namespace, child_name)
            if found is not None and _owned_by(found, body):
                observed.children[(child_kind, child_name)] = found
            elif found is not None and _left_behind(found, body):
                observed.leftovers[(child_kind, child_name)] = found
        observed.pods = store.list("Pod", namespace, {naming.kind_label(kind): name})
        for (child_kind, child_name), child in observed.children.items():  # rare: only Jobs short of pods
            if child_kind == "Job" and jobs.missing_pods(child, observed.pods):
                observed.events += store.warning_events(namespace, "Job", child_name)
        for _ in range(2):  # a second round for dependencies named by dependencies
            for dep_kind, dep_name in dependency_keys(body, observed.dependencies):
                if (dep_kind, dep_name) in observed.dependencies or not dep_name:
                    continue
                found = store.get(dep_kind, namespace, dep_name)
                if found is not None:
                    observed.dependencies[(dep_kind, dep_name)] = found
        if kind == "TrainingRun":
            configmap = naming.progress_configmap(name)
            observed.progress = store.progress(namespace, configmap) or progress_report(
                observed.children.get(("ConfigMap", configmap))
            )
        return observed

    def reconcile(self, kind: str, namespace: str, name: str, force_status: bool = False) -> Plan | None:
        key = (kind, namespace, name)
        with self._lock(key):
            body = self.store.get(kind, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                self._written.pop(key, None)
                return None
            plan = reconcile(body, self.observe(body), self.ctx, self.clock())
            direct = self.store.direct()
            if _settles(body, plan) and direct is not self.store:
                # a terminal phase, its diagnosis and its Event are decided once: on a fresh, consistent
                # read (a cache can hold a failed Job's update before its pod's exit code)
                body = direct.get(kind, namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return None
                plan = reconcile(body, self.observe(body, direct), self.ctx, self.clock())
            for action in plan.actions:
                self._apply(action)
            written, held_back = self._write_status(key, body, plan, force_status)
            if held_back is not None:
                plan = dataclasses.replace(plan, requeue_after=sooner(plan.requeue_after, held_back))
            if self.on_plan is not None:
                self.on_plan(body, plan, written)
            return plan

    def _apply(self, action: Any) -> None:
        obj = action.object
        meta = obj["metadata"]
        try:
            if action.verb == "create":
                self.store.create(obj)
                log.info("created", extra={"kind": obj["kind"], "object": meta["name"], "namespace": meta["namespace"]})
            elif action.verb == "update":
                self.store.update(obj)
            elif action.verb == "patch":
                self.store.patch(obj["kind"], meta["namespace"], meta["name"], action.patch or {})
            elif action.verb == "delete":  # exactly the object observed, not a successor of the same name
                self.store.delete(obj["kind"], meta["namespace"], meta["name"], uid=meta.get("uid"))
                log.info("deleted", extra={"kind": obj["kind"], "object": meta["name"], "namespace": meta["namespace"]})
        except Conflict:
            pass  # created meanwhile (another pass, a restarted operator): the next pass sees it
        except NotFound:
            pass  # already gone

    def _write_status(
        self, key: ResourceKey, body: dict[str, Any], plan: Plan, force: bool
    ) -> tuple[bool, float | None]:
        """Write the plan's status and post its Events; returns (written, seconds until a write the
        throttle held back may be made)."""
        old = body.get("status") or {}
        if plan.status == old:
            return False, None
        now = time.monotonic()
        since = now - self._written[key] if key in self._written else None  # never written: not throttled
        if not force and since is not None and since < self.ctx.status_interval and progress_only(old, plan.status):
            return False, self.ctx.status_interval - since
        try:
            self.store.patch_status(key[0], key[1], key[2], status_patch(old, plan.status))
        except (NotFound, Conflict):
            return False, None
        self._written[key] = now
        for event in plan.events:
            try:
                self.store.event(body, event.type, event.reason, event.message)
            except Exception as exc:  # an Event is never worth a failed reconcile
                log.warning("event not posted", extra={"error": str(exc)})
        return True, None


def _settles(body: dict[str, Any], plan: Plan) -> bool:
    """Whether the plan moves the resource into a terminal phase."""
    phase = plan.status.get("phase")
    return phase in TERMINAL and phase != (body.get("status") or {}).get("phase")


def _left_behind(child: dict[str, Any], owner: dict[str, Any]) -> bool:
    """A child of an earlier resource with the owner's kind and name (another uid)."""
    meta = owner["metadata"]
    return any(
        ref.get("controller")
        and ref.get("kind") == owner["kind"]
        and ref.get("name") == meta["name"]
        and ref.get("uid") != meta.get("uid")
        for ref in child.get("metadata", {}).get("ownerReferences") or []
    )


def _owned_by(child: dict[str, Any], owner: dict[str, Any]) -> bool:
    """A child counts only if the owner controls it (an unrelated object with the same name does not)."""
    uid = owner["metadata"].get("uid")
    refs = child.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs) if uid else True

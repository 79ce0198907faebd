"""The operator's watch cache: ordering by resourceVersion, tombstones, re-lists, conflicting creates."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llmtrain.control.store import Conflict, NotFound
from llmtrain_operator.cache import WatchCache

MANAGED = {"app.kubernetes.io/managed-by": "llmtrain-operator"}


def obj(kind: str, name: str, version: int, labels: dict | None = None, **fields: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "team-a", "resourceVersion": str(version), "labels": labels or dict(MANAGED)}
    return {"kind": kind, "metadata": meta, **fields}


class FakeApi:
    """The API server as the cache sees it: a versioned object map; counts reads."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 100
        self.reads: list[tuple[str, str]] = []

    def put(self, kind: str, name: str, labels: dict | None = None, **fields: Any) -> dict[str, Any]:
        self.version += 1
        self.objects[(kind, name)] = obj(kind, name, self.version, labels, **fields)
        return copy.deepcopy(self.objects[(kind, name)])

    def get(self, kind, namespace, name):
        self.reads.append(("get", kind))
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def list(self, kind, namespace, labels=None):
        return self.list_with_version(kind, namespace, labels)[0]

    def list_with_version(self, kind, namespace, labels=None):
        self.reads.append(("list", kind))
        items = [
            copy.deepcopy(o)
            for (k, _), o in self.objects.items()
            if k == kind and all(o["metadata"]["labels"].get(a) == b for a, b in (labels or {}).items())
        ]
        return items, self.version

    def create(self, body):
        if (body["kind"], body["metadata"]["name"]) in self.objects:
            raise Conflict(body["metadata"]["name"])
        return self.put(body["kind"], body["metadata"]["name"], body["metadata"].get("labels"))

    def patch_status(self, kind, namespace, name, status):
        current = self.objects[(kind, name)]
        return self.put(kind, name, current["metadata"]["labels"], status=status)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def cache(api) -> WatchCache:
    return WatchCache(api, {"TrainingRun": None, "Job": MANAGED, "Pod": MANAGED})


def test_reads_wait_for_nothing_and_go_to_the_api_only_before_the_first_list(api, cache):
    api.put("Job", "a-train")
    assert cache.get("Job", "team-a", "a-train") is not None and api.reads == [("get", "Job")]  # not listed yet
    cache.relist()
    assert cache.synced.is_set()
    api.reads.clear()
    assert cache.get("Job", "team-a", "a-train")["metadata"]["name"] == "a-train"
    assert cache.get("Job", "team-a", "missing") is None
    assert cache.list("Pod", "team-a", {"llmtrain.dev/trainingrun": "a"}) == []
    assert api.reads == []  # answered from the cache


def test_copies_out_and_no_managed_fields(cache):
    cache.relist()
    job = obj("Job", "a-train", 5, spec={"x": 1})
    job["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {}}]
    cache.observe("ADDED", job)
    got = cache.get("Job", "team-a", "a-train")
    got["spec"]["x"] = 2
    assert cache.get("Job", "team-a", "a-train")["spec"]["x"] == 1
    assert "managedFields" not in got["metadata"] and "managedFields" in job["metadata"]  # the event untouched


def test_an_older_event_never_overwrites_a_newer_object(cache):
    cache.relist()
    cache.observe("MODIFIED", obj("TrainingRun", "a", 12, status={"step": 12}))
    cache.observe("MODIFIED", obj("TrainingRun", "a", 11, status={"step": 11}))  # late, from another stream
    assert cache.get("TrainingRun", "team-a", "a")["status"] == {"step": 12}
    cache.observe("DELETED", obj("TrainingRun", "a", 10))  # an earlier incarnation's deletion
    assert cache.get("TrainingRun", "team-a", "a") is not None
    cache.observe("DELETED", obj("TrainingRun", "a", 13))
    assert cache.get("TrainingRun", "team-a", "a") is None


def test_a_list_taken_before_a_deletion_does_not_bring_it_back(api, cache):
    api.put("Job", "a-train")
    items, before = api.list_with_version("Job", None, MANAGED)  # a slow LIST...
    cache.relist()
    del api.objects[("Job", "a-train")]
    cache.observe("DELETED", obj("Job", "a-train", before + 1))  # ...overtaken by the deletion's event
    cache._replace("Job", None, items, before)
    assert cache.get("Job", "team-a", "a-train") is None
    cache.observe("ADDED", obj("Job", "a-train", before + 5))  # created again later: cached again
    assert cache.get("Job", "team-a", "a-train") is not None


def test_a_relist_drops_what_a_cut_watch_never_reported_and_keeps_what_is_newer(api, cache):
    api.put("Job", "gone-train")
    api.put("Job", "kept-train")
    cache.relist()
    del api.objects[("Job", "gone-train")]  # deleted while the watch was down: no event
    items, at = api.list_with_version("Job", None, MANAGED)
    cache.observe("ADDED", obj("Job", "new-train", at + 1))  # created after the LIST was taken
    cache._replace("Job", None, items, at)
    assert cache.get("Job", "team-a", "gone-train") is None
    assert cache.get("Job", "team-a", "kept-train") is not None and cache.get("Job", "team-a", "new-train") is not None


def test_the_servers_answer_to_a_write_is_cached(api, cache):
    api.put("TrainingRun", "a", labels={})
    cache.relist()
    cache.patch_status("TrainingRun", "team-a", "a", {"phase": "Running"})
    assert cache.get("TrainingRun", "team-a", "a")["status"] == {"phase": "Running"}  # before the watch says so
    made = cache.create(obj("Job", "a-train", 0))
    assert cache.get("Job", "team-a", "a-train")["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]


def test_a_create_that_finds_the_name_taken_reads_the_object_back_once(api):
    recovered = []
    cache = WatchCache(api, {"Job": MANAGED}, on_recovered=recovered.append)
    api.put("Job", "a-train", labels={"llmtrain.dev/trainingrun": "a"})  # its managed-by label removed
    cache.relist()
    assert cache.get("Job", "team-a", "a-train") is None  # outside the watch's selection
    want = obj("Job", "a-train", 0, labels={**MANAGED, "llmtrain.dev/trainingrun": "a"})
    with pytest.raises(Conflict):
        cache.create(want)
    assert cache.get("Job", "team-a", "a-train")["metadata"]["labels"] == {"llmtrain.dev/trainingrun": "a"}
    assert recovered == [want]  # its owner is reconciled again, and puts the label back
    api.reads.clear()
    with pytest.raises(Conflict):
        cache.create(want)  # held now: no second read
    assert api.reads == [] and len(recovered) == 1


def test_no_child_is_created_for_an_owner_the_cache_still_holds_but_the_server_deleted(api, cache, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("llmtrain_operator.cache.time.monotonic", lambda: clock[0])
    api.put("TrainingRun", "a", labels={})
    api.objects[("TrainingRun", "a")]["metadata"]["uid"] = "uid-a"
    cache.relist()
    child = obj("Job", "a-train", 0)
    child["metadata"]["ownerReferences"] = [{"kind": "TrainingRun", "name": "a", "uid": "uid-a", "controller": True}]
    api.reads.clear()
    cache.create(child)  # the owner is there
    cache.create(obj("ConfigMap", "a-spec", 0) | {"metadata": child["metadata"] | {"name": "a-spec"}})
    assert api.reads == [("get", "TrainingRun")]  # read once for the children of one pass
    del api.objects[("TrainingRun", "a")], api.objects[("Job", "a-train")]  # deleted; no event seen yet
    clock[0] += 1.5
    with pytest.raises(NotFound, match="TrainingRun team-a/a"):
        cache.create(child)
    assert ("Job", "a-train") not in api.objects and cache.get("TrainingRun", "team-a", "a") is None
    api.put("TrainingRun", "a", labels={})  # the same name again, another uid: still not its owner
    api.objects[("TrainingRun", "a")]["metadata"]["uid"] = "uid-b"
    with pytest.raises(NotFound):
        cache.create(child)


def test_an_owners_deletion_event_ends_what_its_last_read_vouched_for(api, cache):
    api.put("TrainingRun", "a", labels={})
    api.objects[("TrainingRun", "a")]["metadata"]["uid"] = "uid-a"
    cache.relist()
    child = obj("Job", "a-train", 0)
    child["metadata"]["ownerReferences"] = [{"kind": "TrainingRun", "name": "a", "uid": "uid-a", "controller": True}]
    cache.create(child)
    gone = api.objects.pop(("TrainingRun", "a"))
    del api.objects[("Job", "a-train")]
    cache.observe("DELETED", gone)
    with pytest.raises(NotFound):
        cache.create(child)  # read again at once, not trusted for the rest of the second

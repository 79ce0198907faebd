"""The behaviours the emulated API server promises (tests/support/kube_api.py), pinned against the
official client: if kmock or this layer changes, these fail before the operator tests mislead."""

from __future__ import annotations

import json

import kubernetes
import pytest
import yaml

from support.kube_api import ServerThread
from support.paths import ROOT

pytestmark = pytest.mark.emulated  # the emulator's own contract

NS = "team-a"
GROUP = ("llmtrain.dev", "v1alpha1", NS)


@pytest.fixture(scope="module")
def api():
    server = ServerThread().start()
    config = kubernetes.client.Configuration()
    config.host = server.url
    client = kubernetes.client.ApiClient(config)
    yield server, kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
    server.stop()


def error(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status, json.loads(caught.value.body)["message"]


def test_server_sets_metadata_and_namespace_from_the_url(api):
    _, core, _ = api
    made = core.create_namespaced_config_map(NS, {"metadata": {"generateName": "cm-"}, "data": {"a": "1"}})
    assert made.metadata.name.startswith("cm-") and made.metadata.namespace == NS and made.metadata.uid
    assert made.metadata.resource_version and made.metadata.creation_timestamp
    assert error(core.create_namespaced_config_map, NS, {"metadata": {"name": made.metadata.name}})[0] == 409


def test_selectors_and_stale_resource_versions(api):
    _, core, _ = api
    core.create_namespaced_config_map(NS, {"metadata": {"name": "sel-a", "labels": {"app": "x", "tier": "1"}}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "sel-b", "labels": {"app": "x"}}})
    names = lambda **kw: sorted(i.metadata.name for i in core.list_namespaced_config_map(NS, **kw).items)  # noqa: E731
    assert names(label_selector="app=x,tier=1") == ["sel-a"]
    assert names(label_selector="app=x,!tier") == ["sel-b"]
    assert names(field_selector="metadata.name=sel-b") == ["sel-b"]
    current = core.read_namespaced_config_map("sel-a", NS)
    core.patch_namespaced_config_map("sel-a", NS, {"data": {"k": "v"}})
    stale = {"metadata": {"resourceVersion": current.metadata.resource_version}, "data": {"k": "w"}}
    assert error(core.patch_namespaced_config_map, "sel-a", NS, stale)[0] == 409
    assert (
        error(
            core.replace_namespaced_config_map,
            "sel-a",
            NS,
            {"metadata": {"name": "sel-a", "resourceVersion": current.metadata.resource_version}},
        )[0]
        == 409
    )


def test_json_patch_test_failure_is_422(api):
    _, core, _ = api
    core.create_namespaced_config_map(NS, {"metadata": {"name": "jp"}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
    ]
    status, _ = error(
        core.api_client.call_api,
        f"/api/v1/namespaces/{NS}/configmaps/jp",
        "PATCH",
        body=ops,
        header_params={"Content-Type": "application/json-patch+json"},
        auth_settings=[],
    )
    assert status == 422


def test_crd_admission_status_subresource_and_generation(api):
    _, _, custom = api
    documents = list(yaml.safe_load_all((ROOT / "examples" / "run.yaml").read_text()))
    created = custom.create_namespaced_custom_object(*GROUP, "trainingruns", documents[1])
    assert created["metadata"]["generation"] == 1 and created["spec"]["maxRestarts"] == 3  # defaulted
    status = custom.patch_namespaced_custom_object_status(
        *GROUP, "trainingruns", "tiny-llama", {"status": {"phase": "Running"}, "spec": {"suspend": True}}
    )
    assert status["status"]["phase"] == "Running" and status["spec"]["suspend"] is False  # spec ignored on /status
    assert status["metadata"]["generation"] == 1
    main = custom.patch_namespaced_custom_object(
        *GROUP, "trainingruns", "tiny-llama", {"spec": {"suspend": True}, "status": {"phase": "Failed"}}
    )
    assert main["metadata"]["generation"] == 2 and main["status"]["phase"] == "Running"  # status ignored on main
    code, message = error(
        custom.patch_namespaced_custom_object_status, *GROUP, "trainingruns", "tiny-llama", {"status": {"nonsense": 1}}
    )
    assert code == 422 and "nonsense" in message  # status writes are schema-checked: no silent drift
    code, message = error(
        custom.patch_namespaced_custom_object,
        *GROUP,
        "trainingruns",
        "tiny-llama",
        {"spec": {"dataSourceRef": {"name": "other"}}},
    )
    assert code == 422 and "spec.dataSourceRef is immutable" in message


def test_owner_references_cascade_and_watches_resume_or_expire(api):
    server, core, _ = api
    owner = core.create_namespaced_config_map(NS, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid, "controller": True}
    child = core.create_namespaced_config_map(NS, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner", NS)
    assert error(core.read_namespaced_config_map, "child", NS)[0] == 404
    watch = kubernetes.watch.Watch()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.stream(
            core.list_namespaced_config_map, NS, resource_version=child.metadata.resource_version, timeout_seconds=1
        )
    ]
    assert ("DELETED", "owner") in seen and ("DELETED", "child") in seen and ("ADDED", "child") not in seen
    server.call(lambda: server.server.history.clear())
    with pytest.raises(kubernetes.client.ApiException) as gone:
        list(watch.stream(core.list_namespaced_config_map, NS, resource_version="1", timeout_seconds=1))
    assert gone.value.status == 410


def test_a_selector_watch_sees_objects_enter_and_leave_the_selection(api):
    """As the real API server: a label edit that takes an object out of a watch's selection arrives as
    DELETED, one that brings it in as ADDED (the operator's cache relies on it)."""
    _, core, _ = api
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "moving", "labels": {"team": "x"}}})
    core.patch_namespaced_config_map("moving", NS, {"data": {"k": "1"}})
    core.patch_namespaced_config_map("moving", NS, {"metadata": {"labels": {"team": None}}})
    core.patch_namespaced_config_map("moving", NS, {"data": {"k": "2"}})  # unseen: outside the selection
    core.patch_namespaced_config_map("moving", NS, {"metadata": {"labels": {"team": "x"}}})
    stream = kubernetes.watch.Watch().stream(
        core.list_namespaced_config_map,
        NS,
        label_selector="team=x",
        resource_version=made.metadata.resource_version,
        timeout_seconds=1,
    )
    seen = [(e["type"], (e["object"].data or {}).get("k")) for e in stream if e["object"].metadata.name == "moving"]
    assert seen == [("MODIFIED", "1"), ("DELETED", "1"), ("ADDED", "2")]


def test_a_delete_with_a_uid_precondition_spares_a_successor(api):
    _, core, _ = api
    first = core.create_namespaced_config_map(NS, {"metadata": {"name": "reborn"}})
    core.delete_namespaced_config_map("reborn", NS)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "reborn"}})
    options = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid=first.metadata.uid))
    code, message = error(core.delete_namespaced_config_map, "reborn", NS, body=options)
    assert code == 409 and "Precondition failed" in message
    assert core.read_namespaced_config_map("reborn", NS).metadata.uid != first.metadata.uid

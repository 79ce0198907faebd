"""The behaviours the emulated API server promises (tests/support/kube_api.py), pinned against the
official client: if kmock or this layer changes, these fail before the operator tests mislead. The same
suite runs against the real API server (the cluster tier): where the two differ, the emulator is wrong.

What the real server showed: garbage collection is asynchronous (the emulator collected at once; the tests
now wait, as the operator must); an expired watch (an ERROR event with code 410 in both) needs etcd
compaction with the API server's watch cache off (the cache keeps a window of its own); a UID precondition
failure says so in other words; without `fieldValidation=Strict` the real server prunes a
field the schema lacks where the emulator refuses it, so the operator now asks for Strict on every write,
as kubectl does (the emulator is always strict)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import kubernetes
import pytest
import yaml

from support.kube_api import ServerThread
from support.paths import ROOT
from support.real_cluster import ControlPlane, default_bin_dir, missing_binaries

NS = "team-a"
GROUP = ("llmtrain.dev", "v1alpha1", NS)


class Emulated:
    def __init__(self, _tmp: Path) -> None:
        self.server = ServerThread().start()
        config = kubernetes.client.Configuration()
        config.host = self.server.url
        self.client = kubernetes.client.ApiClient(config)

    def expire_history(self) -> None:
        self.server.call(lambda: self.server.server.history.clear())

    def stop(self) -> None:
        self.server.stop()


class Real:
    """The real API server (no nodes), the project's CRDs applied, namespace team-a."""

    def __init__(self, tmp: Path) -> None:
        missing = missing_binaries(default_bin_dir())
        if missing:
            pytest.skip(f"SKIPPED: no {', '.join(missing)} in {default_bin_dir()}: run `make cluster-bins` first")
        # watches served by etcd itself, so that a compaction expires them (the watch cache keeps its own window)
        self.cp = ControlPlane(default_bin_dir(), tmp, apiserver_args=("--watch-cache=false",))
        self.cp.start()
        self.cp.wait_ready(90)
        self.client = kubernetes.config.new_client_from_config(config_file=str(self.cp.kubeconfig))
        ext = kubernetes.client.ApiextensionsV1Api(self.client)
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        kubernetes.client.CoreV1Api(self.client).create_namespace({"metadata": {"name": NS}})
        for crd in ("trainingruns", "datasources", "modelexports"):
            until(lambda c=crd: _established(ext, f"{c}.llmtrain.dev"), f"CRD {crd} established")

    def expire_history(self) -> None:
        self.cp.compact_etcd()

    def stop(self) -> None:
        self.cp.stop()


def _established(ext, name: str) -> bool:
    conditions = ext.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def until(check, what: str, timeout: float = 30.0):
    """Poll `check` until truthy: the real server does some things (garbage collection) asynchronously."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)
    return value


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(Emulated, id="emulated", marks=pytest.mark.emulated),
        pytest.param(Real, id="real", marks=[pytest.mark.cluster, pytest.mark.timeout(300)]),
    ],
)
def backend(request, tmp_path_factory):
    made = request.param(tmp_path_factory.mktemp("api"))
    yield made
    made.stop()


@pytest.fixture(scope="module")
def api(backend):
    client = backend.client
    return backend, kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)


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
        custom.patch_namespaced_custom_object_status,
        *GROUP,
        "trainingruns",
        "tiny-llama",
        {"status": {"nonsense": 1}},
        field_validation="Strict",  # as the operator's writes ask (KubeStore), and kubectl's
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
    names = lambda: {c.metadata.name for c in core.list_namespaced_config_map(NS).items}  # noqa: E731
    until(lambda: "child" not in names(), "the child collected")  # asynchronous on the real server
    watch = kubernetes.watch.Watch()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.stream(
            core.list_namespaced_config_map, NS, resource_version=child.metadata.resource_version, timeout_seconds=1
        )
    ]
    assert ("DELETED", "owner") in seen and ("DELETED", "child") in seen and ("ADDED", "child") not in seen
    server.expire_history()
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
    assert code == 409 and "precondition" in message.lower()  # the real server: "the UID in the precondition ..."
    assert core.read_namespaced_config_map("reborn", NS).metadata.uid != first.metadata.uid

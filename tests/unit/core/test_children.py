"""Every child manifest the core emits is a valid Kubernetes object, wired as the contracts say."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from llmtrain.api import DataSource
from llmtrain.core import children, datasource
from llmtrain.core.reconcile import child_keys
from support.plans import all_children

VERSIONS = ["1.29", "1.35"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_child_passes_kubernetes_validate_strict(bodies, cluster, version):
    objects = all_children(bodies, cluster)
    assert sorted({o["kind"] for o in objects}) == [
        "ConfigMap",
        "Job",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_pods_are_locked_down_and_owned(bodies, cluster):
    for obj in all_children(bodies, cluster):
        ref = obj["metadata"]["ownerReferences"][0]
        assert ref["controller"] is True and ref["uid"].startswith("uid-")
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmtrain-operator"
        if obj["kind"] != "Job":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        if obj["metadata"]["name"] != "tiny-llama-train":
            assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("workers", [1, 4])
def test_the_keys_the_shell_reads_are_the_children_each_kind_declares(bodies, cluster, workers):
    """`child_keys` is derived from each kind's named structure: every child a plan creates is among the
    keys, and every key is a child the kind builds (the later stages' Jobs only with workers > 1)."""
    bodies = copy.deepcopy(bodies)
    bodies["DataSource"]["spec"]["workers"] = workers
    created = {}
    for obj in all_children(bodies, cluster):
        owner = next(ref["kind"] for ref in obj["metadata"]["ownerReferences"])
        created.setdefault(owner, set()).add((obj["kind"], obj["metadata"]["name"]))
    built = children.objects(
        datasource.build(bodies["DataSource"], DataSource.model_validate(bodies["DataSource"]), cluster)
    )
    created["DataSource"] |= {(obj["kind"], obj["metadata"]["name"]) for obj in built}
    for kind, body in bodies.items():
        keys = set(child_keys(body))
        assert created[kind] <= keys
        unused = keys - created[kind]
        later_stages = {("Job", f"shakespeare-{s}") for s in ("dedup", "cluster", "tokenizer", "encode", "manifest")}
        assert unused == (later_stages if kind == "DataSource" and workers == 1 else set())

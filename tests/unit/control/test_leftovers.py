"""Children a previous resource of the same name left behind are removed before anything is created, so
a new Job never reads an old spec ConfigMap (seen in the e2e-mode test: a DataSource re-created under the
same name ingested its predecessor's sources)."""

from __future__ import annotations

import pytest

from llmtrain.control.reconciler import Reconciler
from llmtrain.control.store import Conflict
from llmtrain.core import Context, naming
from llmtrain.local.filestore import FileStore
from support.resources import EXAMPLES, world_with_a_run


def test_a_leftover_spec_configmap_is_deleted_first_then_everything_is_created_anew(tmp_path):
    world, run = world_with_a_run(tmp_path)
    namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
    spec_name = naming.spec_configmap("TrainingRun", name)
    previous = {"apiVersion": run["apiVersion"], "kind": "TrainingRun", "name": name, "uid": "uid-of-the-deleted-run"}
    world.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": spec_name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": naming.MANAGED_BY, naming.kind_label("TrainingRun"): name},
                "ownerReferences": [{**previous, "controller": True}],
            },
            "data": {naming.SPEC_KEY: "the previous run's spec"},
        }
    )
    reconciler = Reconciler(world, Context(local=True, base_dir=str(EXAMPLES)))

    reconciler.reconcile("TrainingRun", namespace, name)
    assert world.get("ConfigMap", namespace, spec_name) is None  # removed, and nothing created beside it
    assert world.get("Job", namespace, naming.train_job(name)) is None

    reconciler.reconcile("TrainingRun", namespace, name)
    spec = world.get("ConfigMap", namespace, spec_name)
    assert spec["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    assert "previous" not in spec["data"][naming.SPEC_KEY]
    assert world.get("Job", namespace, naming.train_job(name)) is not None


def test_a_delete_names_the_object_it_means(tmp_path):
    world = FileStore(tmp_path)
    made = world.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}})
    with pytest.raises(Conflict):
        world.delete("ConfigMap", "n", "c", uid="someone-else")
    world.delete("ConfigMap", "n", "c", uid=made["metadata"]["uid"])
    assert world.get("ConfigMap", "n", "c") is None

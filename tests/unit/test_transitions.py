"""Updates: what the API server refuses to change on a live resource (CEL transition rules)."""

from __future__ import annotations

import copy

from support.apiserver import admit


def test_model_shape_is_immutable(valid, crds):
    old = valid["TrainingRun"]
    new = copy.deepcopy(old)
    new["spec"]["model"]["layers"] = 4
    assert admit(crds["TrainingRun"], new, old) == [
        "spec.model: spec.model is immutable: create a new TrainingRun to train a different model"
    ]


def test_data_source_is_immutable(valid, crds):
    old = valid["TrainingRun"]
    new = copy.deepcopy(old)
    new["spec"]["dataSourceRef"]["name"] = "other"
    assert admit(crds["TrainingRun"], new, old) == [
        "spec.dataSourceRef: spec.dataSourceRef is immutable: create a new TrainingRun to train on other data"
    ]


def test_training_can_be_extended_and_suspended(valid, crds):
    old = valid["TrainingRun"]
    new = copy.deepcopy(old)
    new["spec"]["training"]["maxSteps"] = 20
    new["spec"]["suspend"] = True
    new["spec"]["resources"] = {"nodes": 2}
    assert admit(crds["TrainingRun"], new, old) == []


def test_writing_a_default_explicitly_is_no_change(valid, crds):
    old = valid["TrainingRun"]
    new = copy.deepcopy(old)
    new["spec"]["model"]["architecture"] = "llama"
    assert admit(crds["TrainingRun"], new, old) == []


def test_transition_rules_do_not_block_creation(valid, crds):
    assert admit(crds["TrainingRun"], valid["TrainingRun"]) == []

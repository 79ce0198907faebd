"""Memoized validation of stored resources: same verdict as a fresh parse, shared only while it would be."""

from __future__ import annotations

import copy

import pytest

from llmtrain.api import SpecError, TrainingRun, parse_resource
from llmtrain.core import Observed, parsed
from llmtrain.core import reconcile as core_reconcile
from support.resources import NOW, ready


def test_status_and_server_metadata_do_not_matter_spec_and_labels_do(bodies):
    body = copy.deepcopy(bodies["TrainingRun"])
    first = parsed.resource(body)
    fresh = parse_resource(body)
    assert (first.spec, first.name, first.metadata.labels) == (fresh.spec, fresh.name, fresh.metadata.labels)
    body["status"] = {"phase": "Running", "step": 7}
    body["metadata"]["resourceVersion"] = "999"
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    assert parsed.resource(body) is first and parsed.model(TrainingRun, body).spec == first.spec
    body["spec"]["training"]["maxSteps"] = 12345
    changed = parsed.resource(body)
    assert changed is not first and changed.spec.training.max_steps == 12345
    body["metadata"]["labels"] = {"team": "a"}
    assert parsed.resource(body) is not changed


def test_a_bad_spec_is_refused_every_time(bodies):
    body = copy.deepcopy(bodies["TrainingRun"])
    body["spec"]["training"]["maxSteps"] = -1
    for _ in range(2):
        with pytest.raises(SpecError, match="maxSteps"):
            parsed.resource(body)


def test_a_reconcile_leaves_the_shared_model_as_it_was(bodies, cluster):
    body = bodies["TrainingRun"]
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    before = parsed.resource(body).model_dump()
    source_before = parsed.model(type(parse_resource(bodies["DataSource"])), deps[("DataSource", "shakespeare")])
    dumped = source_before.model_dump()
    for _ in range(2):
        core_reconcile(body, Observed(dependencies=deps), cluster, NOW)
    assert parsed.resource(body).model_dump() == before and source_before.model_dump() == dumped

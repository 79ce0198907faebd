"""The operator's limits on ingest sources (network policy, read deadline) reach the ingest pods, and only
from the operator's configuration: chart values -> operator settings -> Context -> pod env."""

from __future__ import annotations

import copy

import jsonschema
import pydantic
import pytest
import yaml

from llmtrain import netpolicy
from llmtrain.api.datasource import DataSourceSpec
from llmtrain.core import Context, Observed, reconcile
from llmtrain_operator.settings import ConfigurationError, from_env
from support.paths import ROOT
from support.resources import NOW

CHART = ROOT / "charts" / "llmtrain"


def ingest_env(body, ctx: Context) -> dict[str, str]:
    jobs = [a.object for a in reconcile(body, Observed(), ctx, NOW).actions if a.object.get("kind") == "Job"]
    container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_ingest_pods_get_the_cluster_policy_by_default(bodies):
    env = ingest_env(bodies["DataSource"], from_env({}).context())
    assert env[netpolicy.DENIED_ENV] == ",".join(netpolicy.CLUSTER_DENIED)
    assert netpolicy.ALLOWED_ENV not in env and "LLMTRAIN_READ_DEADLINE_SECONDS" not in env
    policy = netpolicy.from_env(env)
    assert policy.refusal("10.96.0.1") is not None and policy.refusal("127.0.0.1") is not None


def test_the_operators_allow_list_and_deadline_reach_the_ingest_pods(bodies):
    settings = from_env(
        {
            netpolicy.DENIED_ENV: "10.0.0.0/8, 127.0.0.0/8",
            netpolicy.ALLOWED_ENV: "10.96.12.34/32",
            "LLMTRAIN_READ_DEADLINE_SECONDS": "600",
        }
    )
    env = ingest_env(bodies["DataSource"], settings.context())
    assert env[netpolicy.DENIED_ENV] == "10.0.0.0/8,127.0.0.0/8"
    assert env[netpolicy.ALLOWED_ENV] == "10.96.12.34/32" and env["LLMTRAIN_READ_DEADLINE_SECONDS"] == "600"
    assert netpolicy.from_env(env).refusal("10.96.12.34") is None


def test_a_datasource_cannot_bring_its_own_policy(bodies):
    """The spec has no field for it; the local runner leaves the workload's default (loopback allowed)."""
    spec = {**bodies["DataSource"]["spec"], "env": [{"name": netpolicy.ALLOWED_ENV, "value": "0.0.0.0/0"}]}
    with pytest.raises(pydantic.ValidationError, match="env"):
        DataSourceSpec.model_validate(spec)
    local = ingest_env(bodies["DataSource"], Context(local=True, base_dir=str(ROOT / "examples")))
    assert netpolicy.DENIED_ENV not in local


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({netpolicy.DENIED_ENV: "10.0.0.0/8,ten"}, netpolicy.DENIED_ENV),
        ({netpolicy.ALLOWED_ENV: "300.1.1.1/32"}, netpolicy.ALLOWED_ENV),
        ({"LLMTRAIN_READ_DEADLINE_SECONDS": "0"}, "LLMTRAIN_READ_DEADLINE_SECONDS"),
    ],
)
def test_bad_operator_settings_name_the_variable(env, name):
    with pytest.raises(ConfigurationError, match=name):
        from_env(env)


def test_chart_defaults_are_the_cluster_policy_and_the_schema_checks_cidrs():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    jsonschema.validate(values, schema)
    assert tuple(values["ingest"]["httpSources"]["deniedCIDRs"]) == netpolicy.CLUSTER_DENIED
    for bad in (["10.0.0.0"], ["10.0.0.0/33"], ["everything"], ["::1/129"]):
        wrong = copy.deepcopy(values)
        wrong["ingest"]["httpSources"]["allowedCIDRs"] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)

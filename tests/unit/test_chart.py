"""The Helm chart, rendered by the real helm binary (`make tools`) and validated object by object."""

from __future__ import annotations

import filecmp
import subprocess

import kubernetes_validate
import pytest
import yaml

from llmtrain import netpolicy
from support.paths import ROOT

HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "llmtrain"
VALUE_SETS = {
    "default": [],
    "namespaced-s3": [
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "storage.root=s3://models/llm",
        "--set",
        "storage.secret=s3-creds",
        "--set",
        "storage.s3Endpoint=http://minio:9000",
    ],
    "monitoring": [
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.podMonitor.enabled=true",
        "--set",
        "metrics.port=9090",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
    ],
    "placement": [
        "--set",
        "nodeSelector.pool=system",
        "--set",
        "image.tag=0.1.1",
        "--set",
        "imagePullSecrets[0].name=registry",
        "--set",
        "operator.workers=8",
    ],
    "ingest-policy": [
        "--set-json",
        'ingest.httpSources.allowedCIDRs=["10.96.12.34/32","fd00:10:96::/64"]',
        "--set-json",
        'ingest.httpSources.deniedCIDRs=["0.0.0.0/0","::/0"]',
        "--set",
        "ingest.readDeadlineSeconds=600",
    ],
}
pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is not installed: run `make tools`")


def helm(*args: str) -> str:
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(values: list[str]) -> list[dict]:
    text = helm("template", "llmtrain", str(CHART), "--namespace", "llmtrain-system", *values)
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict(name):
    helm("lint", "--strict", str(CHART), *VALUE_SETS[name])


@pytest.mark.parametrize("version", ["1.29", "1.35"])
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid(name, version):
    objects = render(VALUE_SETS[name])
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # a Prometheus Operator custom resource: not in the Kubernetes schemas
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = sorted(o["kind"] for o in objects)
    if name == "namespaced-s3":
        assert kinds.count("Role") == 2 and "ClusterRole" not in kinds  # nothing cluster-wide
    if name == "monitoring":
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= set(kinds) and kinds.count("ConfigMap") == 1


def test_values_schema_refuses_bad_values():
    for bad in (
        ["--set", "storage.root=/data"],
        ["--set", "storage.root=s3://b/p"],
        ["--set", "operator.workers=0"],
        ["--set", "watchNamespaces={Team_A}"],
        ["--set", "unknownKey=1"],
        ["--set-json", 'ingest.httpSources.allowedCIDRs=["10.0.0.1"]'],
        ["--set-json", 'ingest.httpSources.deniedCIDRs=["everything"]'],
        ["--set", "ingest.readDeadlineSeconds=0"],
        ["--set", "metrics.podMonitor.interval=often"],
    ):
        result = subprocess.run(
            [str(HELM), "template", "x", str(CHART), *bad], capture_output=True, text=True, timeout=120
        )
        assert result.returncode != 0, bad


def test_operator_pod_is_locked_down_and_single():
    deployment = next(o for o in render([]) if o["kind"] == "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" and container["resources"]["requests"]


def test_chart_crds_are_the_generated_ones():
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == generated
    for name in generated:
        assert filecmp.cmp(ROOT / "crds" / name, CHART / "crds" / name, shallow=False), f"run `make crds`: {name}"


def test_ingest_limits_reach_the_operator_environment():
    deployment = next(o for o in render(VALUE_SETS["ingest-policy"]) if o["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLMTRAIN_HTTP_ALLOWED_CIDRS"] == "10.96.12.34/32,fd00:10:96::/64"
    assert env["LLMTRAIN_HTTP_DENIED_CIDRS"] == "0.0.0.0/0,::/0" and env["LLMTRAIN_READ_DEADLINE_SECONDS"] == "600"
    default = next(o for o in render([]) if o["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in default["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LLMTRAIN_HTTP_DENIED_CIDRS"] == ",".join(netpolicy.CLUSTER_DENIED)


def test_pod_monitor_scrapes_rank_zero_trainer_pods_on_their_metrics_port():
    """The PodMonitor selects what the operator puts on a trainer pod: its labels, the named port."""
    from llmtrain.core import naming
    from llmtrain.core.trainingrun import METRICS_PORT
    from support.trainer_job import trainer_job

    assert not [o for o in render([]) if o["kind"] == "PodMonitor"]  # off by default
    monitor = next(o for o in render(VALUE_SETS["monitoring"]) if o["kind"] == "PodMonitor")
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True} and spec["podMetricsEndpoints"][0]["port"] == "metrics"
    selector = spec["selector"]["matchLabels"]
    assert selector.pop("batch.kubernetes.io/job-completion-index") == "0"  # rank 0 serves the metrics
    pod = trainer_job()["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == METRICS_PORT and selector["app.kubernetes.io/managed-by"] == naming.MANAGED_BY
    scoped = render(["--set", "metrics.podMonitor.enabled=true", "--set", "watchNamespaces={team-a,team-b}"])
    scoped_monitor = next(o for o in scoped if o["kind"] == "PodMonitor")
    assert scoped_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}

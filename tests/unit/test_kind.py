"""The kind targets (`make kind-up images kind-load deploy e2e-kind`). No Docker engine or kind runs here, so
this checks what they would do: the commands `make -n` prints, the manifests `make deploy` applies (valid
for Kubernetes 1.29 and 1.35) and the chart install it runs (rendered by the real helm binary)."""

from __future__ import annotations

import re
import shlex
import subprocess

import kubernetes_validate
import pytest
import yaml

from support.cluster import E2E_KUBECONFIG, NAMESPACE, small_run
from support.paths import ROOT

HELM = ROOT / ".tools" / "bin" / "helm"
OPERATOR_IMAGE, TRAINER_IMAGE = "ghcr.io/llmtrain/operator:0.1.0", "ghcr.io/llmtrain/trainer:0.1.0"


@pytest.fixture(scope="module")
def dry_run() -> list[str]:
    """The commands `make e2e-kind` runs, as `make -n` prints them (recursive makes dry-run too)."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "e2e-kind", "VENV=.venv-never"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]


def first(lines: list[str], pattern: str) -> int:
    return next(i for i, line in enumerate(lines) if re.search(pattern, line))


def test_e2e_kind_creates_builds_loads_deploys_then_tests_in_that_order(dry_run):
    steps = [
        r"kind create cluster --name llmtrain",
        r"kind get kubeconfig --name llmtrain > .*/\.tools/kind-llmtrain\.kubeconfig",
        rf"docker build -f images/operator\.Dockerfile -t {OPERATOR_IMAGE} \.",
        rf"docker build -f images/trainer\.Dockerfile --build-arg CUDA_IMAGE=ubuntu:22\.04 .* -t {TRAINER_IMAGE} \.",
        rf"kind load docker-image --name llmtrain {OPERATOR_IMAGE} {TRAINER_IMAGE}",
        r"kubectl apply -f -",
        r"kubectl -n team-a cp examples/data/shakespeare/\. corpus-loader:/corpus/shakespeare",
        r"helm upgrade --install llmtrain charts/llmtrain",
        rf"{E2E_KUBECONFIG}=.*kind-llmtrain\.kubeconfig .*python -m pytest tests/integration",
    ]
    positions = [first(dry_run, step) for step in steps]
    assert positions == sorted(positions), dict(zip(steps, positions, strict=True))


def cluster_manifests() -> list[dict]:
    text = (ROOT / "tests" / "e2e" / "cluster.yaml").read_text().replace("TRAINER_IMAGE", TRAINER_IMAGE)
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("version", ["1.29", "1.35"])
def test_deploy_manifests_are_valid(version):
    for manifest in cluster_manifests():
        kubernetes_validate.validate(manifest, version, strict=True)


def test_deploy_prepares_what_the_integration_tests_read():
    manifests = {(m["kind"], m["metadata"]["name"]) for m in cluster_manifests()}
    assert ("Namespace", NAMESPACE) in manifests
    run = small_run()
    claims = {source["pvc"]["claimName"] for source in run[0]["spec"]["sources"]}
    claims |= {run[0]["spec"]["output"]["uri"].split("/")[2]}  # pvc://<claim>/...
    assert {("PersistentVolumeClaim", claim) for claim in claims} <= manifests


@pytest.mark.skipif(not HELM.exists(), reason="helm is not installed: run `make tools`")
def test_deploy_installs_the_chart_with_the_built_images_watching_team_a(dry_run):
    install = shlex.split(dry_run[first(dry_run, r"helm upgrade --install")])
    index = install.index("upgrade")
    args = [a for a in install[index + 2 :] if a not in ("--wait", "--create-namespace", "--timeout", "5m")]
    result = subprocess.run([str(HELM), "template", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(result.stdout) if d]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == OPERATOR_IMAGE
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LLMTRAIN_IMAGE"] == TRAINER_IMAGE and env["LLMTRAIN_NAMESPACES"] == NAMESPACE
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    assert [(r["kind"], r["metadata"].get("namespace")) for r in roles] == [("Role", NAMESPACE)]

"""The e2e mode of the integration tests (`make e2e-kind`), exercised here: the emulated cluster stands in
for the real one behind a kubeconfig, with the operator running beside it as `make deploy` would leave it,
and the integration modules run in a child pytest with LLMTRAIN_E2E_KUBECONFIG set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from support.cluster import E2E_KUBECONFIG
from support.paths import ROOT

# emulated: it is the stand-in for the real cluster; slow: the cluster tier runs the same modules behind a
# kubeconfig on the real control plane (test_real_e2e.py), so the default tier leaves this minute to CI
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def kubeconfig(server: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester", "namespace": "team-a"}}],
        "current-context": "emulated",
    }


def test_integration_modules_run_against_a_cluster_behind_a_kubeconfig(cluster, tmp_path):
    cluster.start_operator()  # the deployed operator
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig(cluster.api.url)))
    modules = ["tests/integration/test_operator.py", "tests/integration/test_failures.py"]
    # the mixture and continued-pretraining examples run in the default tier directly and in the cluster
    # tier behind a kubeconfig (test_real_e2e.py); here they would only double their minute
    examples = ("test_mixture_example_succeeds_with_each_sources_figures", "test_continued_pretraining_example_")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *modules, "-k", _not(examples)],
        cwd=ROOT,
        env={**os.environ, E2E_KUBECONFIG: str(config)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "3 passed, 1 skipped, 2 deselected" in result.stdout, result.stdout[-3000:]
    assert "needs the emulated API server" in result.stdout  # the operator-restart/fault test is skipped
    assert not cluster.names("Job") and not cluster.names("TrainingRun")  # each test cleaned up after itself


def _not(names: tuple[str, ...]) -> str:
    return " and ".join(f"not {name}" for name in names)

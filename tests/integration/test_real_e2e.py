"""The cluster tier's e2e run: the project's real control plane with two node agents, the chart installed
as `make e2e` installs it (tests/support/real_deploy.py), and the integration modules run in the harness's
e2e mode against it (a child pytest, as `make e2e` runs them): the user journey (test_journey.py) and the
operator and failure tests that need no emulation.

Needs `make cluster-bins` and `make tools`; skipped (loudly) without them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from support.cluster import E2E_KUBECONFIG
from support.paths import ROOT
from support.real_cluster import ControlPlane, default_bin_dir, missing_binaries
from support.real_deploy import E2E_VOLUMES, deploy, team_volumes

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]
MODULES = [
    "tests/integration/test_journey.py",
    "tests/integration/test_operator.py",
    "tests/integration/test_failures.py",
]
NODES, CAPACITY = 2, "cpu=3,memory=16Gi,nvidia.com/gpu=2"  # one 2-CPU trainer pod per node


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    missing = missing_binaries(default_bin_dir())
    if missing:
        pytest.skip(f"SKIPPED: no {', '.join(missing)} in {default_bin_dir()}: run `make cluster-bins` first")
    if os.geteuid() != 0:
        pytest.skip("SKIPPED: the node agents run pods in mount namespaces, which needs root")
    for tool in ("kubectl", "helm"):
        if not os.access(ROOT / ".tools" / "bin" / tool, os.X_OK):
            pytest.skip(f"SKIPPED: no .tools/bin/{tool}: run `make tools` first")
    cp = ControlPlane(default_bin_dir(), tmp_path_factory.mktemp("e2e-cluster"), nodes=NODES, capacity=CAPACITY)
    try:
        cp.start()
        print(f"control plane and {NODES} node agents ready in {cp.wait_ready(120):.1f} s")
        started = time.monotonic()
        deploy(cp)
        print(f"helm install and the operator Ready in {time.monotonic() - started:.1f} s")
        yield cp
    finally:
        cp.stop()


def test_integration_modules_in_e2e_mode_on_the_real_cluster(deployed: ControlPlane) -> None:
    env = {
        **os.environ,
        E2E_KUBECONFIG: str(deployed.kubeconfig),
        E2E_VOLUMES: str(team_volumes(deployed)),
        "LLMTRAIN_E2E_STATE": str(deployed.state_dir),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-s", *MODULES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=2200,
    )
    print(result.stdout[-8000:])
    print(f"e2e modules took {time.monotonic() - started:.0f} s")
    if result.returncode != 0:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(deployed.logs.glob("node-*.log"))
        )
        pytest.fail(result.stdout[-12000:] + result.stderr[-3000:] + logs)
    summary = result.stdout.strip().splitlines()[-1]
    # test_journey's 9, test_operator's 3 (the example run, the mixture and continued-pretraining examples),
    # test_failures' 2; its emulation-only test (a fault-injecting API) skipped
    assert re.search(r"\b14 passed, 1 skipped\b", summary), summary

"""The real control plane (tests/support/real_cluster.py), smoke-tested with kubectl: version, the project's
CRDs accepted by the real apiextensions server, a Job's pods made by the real Job controller and left
unscheduled by the real scheduler (no node), and collected by the real garbage collector.

Needs `make cluster-bins` and `make tools`; skipped (loudly) without them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from support.paths import ROOT
from support.real_cluster import ControlPlane, default_bin_dir, missing_binaries, versions
from support.real_deploy import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
CRDS = ("datasources.llmtrain.dev", "modelexports.llmtrain.dev", "trainingruns.llmtrain.dev")


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    bin_dir = default_bin_dir()
    missing = missing_binaries(bin_dir)
    if missing:
        pytest.skip(f"SKIPPED: no {', '.join(missing)} in {bin_dir}: run `make cluster-bins` first")
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip(f"SKIPPED: no {KUBECTL}: run `make tools` first")
    cp = ControlPlane(bin_dir, tmp_path_factory.mktemp("control-plane"))
    try:
        cp.start()
        seconds = cp.wait_ready(90)
        print(f"control plane ready in {seconds:.1f} s")
        yield cp
    finally:
        cp.stop()


def kubectl(cp: ControlPlane, *args: str, timeout: float = 30) -> str:
    proc = subprocess.run(
        [str(KUBECTL), f"--kubeconfig={cp.kubeconfig}", f"--request-timeout={int(timeout)}s", *args],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def test_server_version(control_plane: ControlPlane) -> None:
    version = json.loads(kubectl(control_plane, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == versions()[0] == "v1.34.4"


# Found by this test: the real apiextensions server validated each `default: {}` against the object's CEL
# rules without filling in the nested defaults first, so DataSource's specialTokens, validation and
# dedup.minhash rules (self.bos, self.maxChars, self.numPerm) failed with "no such key", and `helm install`
# would have refused the chart. The emulator and kubernetes-validate let it through. crdgen now writes the
# whole defaulted object as each nested default.
@pytest.mark.parametrize("crd", CRDS)
def test_crd_established(control_plane: ControlPlane, crd: str) -> None:
    path = ROOT / "crds" / f"{crd.split('.', 1)[1]}_{crd.split('.', 1)[0]}.yaml"
    kubectl(control_plane, "apply", "--server-side", "-f", str(path))
    out = kubectl(control_plane, "wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd}", timeout=40)
    assert "condition met" in out, out
    resources = kubectl(control_plane, "api-resources", "--api-group=llmtrain.dev", "-o", "name")
    assert crd in resources.split()


def pods(cp: ControlPlane, job: str) -> list[dict]:
    return json.loads(kubectl(cp, "get", "pods", "-l", f"job-name={job}", "-o", "json"))["items"]


def test_job_pods_unscheduled_then_collected(control_plane: ControlPlane) -> None:
    cp = control_plane
    kubectl(cp, "create", "job", "smoke", "--image=busybox:1.36", "--", "true")

    def unschedulable() -> list[dict]:
        items = pods(cp, "smoke")
        return [
            p
            for p in items
            for c in p.get("status", {}).get("conditions", [])
            if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
        ]

    # made by the real Job controller, marked unschedulable by the real scheduler (no node)
    (pod,) = eventually("a pod of job smoke, Unschedulable", unschedulable)
    assert not pod["spec"].get("nodeName")
    assert pod["status"]["phase"] == "Pending"
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Job", "smoke", True)

    kubectl(cp, "delete", "job", "smoke", "--cascade=background", "--wait=false")
    eventually("job smoke's pods garbage-collected", lambda: not pods(cp, "smoke"))

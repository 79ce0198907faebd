"""What `make deploy` does on kind, done on the project's own real control plane (node agents, no images).

`deploy(cp)`: the namespace the operator watches (team-a) with its storage and corpus claims
(tests/e2e/cluster.yaml, bound by the node agent's local-path provisioner), the corpus copied into the
corpus volume (kind uses `kubectl cp` through a loader pod; here the volume is a directory on this
machine), then `helm install` of the real chart, waiting until the operator's pod is Ready. The images are
the project's (`ghcr.io/llmtrain/{operator,trainer}:<version>`), which the node agents run from
environments built as the Dockerfiles install them. The operator's ports are free ones (pods share the
host network here).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from support.paths import ROOT
from support.real_cluster import ControlPlane, free_port

NAMESPACE = "team-a"
RELEASE, RELEASE_NAMESPACE = "llmtrain", "llmtrain-system"
TOOLS = ROOT / ".tools" / "bin"
#: where `make e2e` tells the integration tests the team-a volumes are
E2E_VOLUMES = "LLMTRAIN_E2E_VOLUMES"


def eventually(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def images() -> tuple[str, str]:
    return f"ghcr.io/llmtrain/operator:{version()}", f"ghcr.io/llmtrain/trainer:{version()}"


def tool(kubeconfig: Path, name: str, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    """kubectl or helm against the cluster of a kubeconfig; raises with the tool's stderr on failure."""
    proc = subprocess.run(
        [str(TOOLS / name), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-3000:]}")
    return proc.stdout


def team_volumes(cp: ControlPlane) -> Path:
    return cp.volumes / NAMESPACE


def deploy(cp: ControlPlane, timeout: int = 180) -> None:
    documents = [d for d in yaml.safe_load_all((ROOT / "tests" / "e2e" / "cluster.yaml").read_text()) if d]
    claims = [d for d in documents if d["kind"] in ("Namespace", "PersistentVolumeClaim")]  # no loader pod
    tool(cp.kubeconfig, "kubectl", "apply", "-f", "-", stdin=yaml.safe_dump_all(claims))
    for claim in (d["metadata"]["name"] for d in claims if d["kind"] == "PersistentVolumeClaim"):
        tool(
            cp.kubeconfig,
            "kubectl",
            "wait",
            "-n",
            NAMESPACE,
            "--for=jsonpath={.status.phase}=Bound",
            f"pvc/{claim}",
            "--timeout=60s",
            timeout=70,
        )
    corpus = team_volumes(cp) / "corpus" / "shakespeare"
    shutil.copytree(ROOT / "examples" / "data" / "shakespeare", corpus, dirs_exist_ok=True)
    operator, trainer = images()
    repository, tag = operator.rsplit(":", 1)
    tool(
        cp.kubeconfig,
        "helm",
        "install",
        RELEASE,
        str(ROOT / "charts" / "llmtrain"),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "-f",
        str(ROOT / "tests" / "e2e" / "values.yaml"),
        "--set",
        f"workloadImage={trainer}",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        f"metrics.port={free_port()}",
        "--set",
        f"health.port={free_port()}",
        # the tests' HTTP sources serve from 127.0.0.1, which the chart's default policy denies: this
        # cluster's administrator allows loopback, as the emulated harness does
        "--set-json",
        'ingest.httpSources.allowedCIDRs=["127.0.0.0/8"]',
        "--wait",
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )

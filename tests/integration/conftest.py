"""The integration tests run against the emulated API server (default) or, with LLMTRAIN_E2E_KUBECONFIG
set (`make e2e-kind`), against a real cluster where `make deploy` installed the chart and the corpus."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from support.cluster import E2E_KUBECONFIG, Cluster, Harness, RealCluster
from support.paths import ROOT


def pytest_collection_modifyitems(config, items) -> None:
    if not os.environ.get(E2E_KUBECONFIG):
        return
    skip = pytest.mark.skip(reason="needs the emulated API server or the in-process executor")
    for item in items:
        if "emulated" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cluster(tmp_path) -> Iterator[Harness]:
    kubeconfig = os.environ.get(E2E_KUBECONFIG)
    if kubeconfig:
        world: Harness = RealCluster(kubeconfig)
    else:
        corpus = tmp_path / "volumes" / "corpus" / "shakespeare"
        shutil.copytree(ROOT / "examples" / "data" / "shakespeare", corpus)
        world = Cluster(tmp_path)
    try:
        yield world
    finally:
        world.close()

"""The real operator against the emulated API server (support/cluster.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from support.cluster import Cluster
from support.paths import ROOT


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    corpus = tmp_path / "volumes" / "corpus" / "shakespeare"
    shutil.copytree(ROOT / "examples" / "data" / "shakespeare", corpus)
    world = Cluster(tmp_path)
    try:
        yield world
    finally:
        world.close()

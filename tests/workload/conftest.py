"""Fixtures of the workload tier (real CLIs on real text in temp dirs, real servers on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.ingest import shakespeare  # noqa: F401 - a fixture
from support.seaweed import S3Server, run_seaweed


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    yield from run_seaweed()

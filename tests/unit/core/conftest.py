"""Fixtures for the functional core: the example run's resources as the API server would store them."""

from __future__ import annotations

from typing import Any

import pytest

from llmtrain.api.manifests import read_documents
from llmtrain.core import Context, Observed
from support.plans import desired_job, reconcile
from support.resources import EXAMPLES, NOW, ready, stored


@pytest.fixture
def bodies() -> dict[str, dict[str, Any]]:
    """The example run, with its DataSource reading a PVC (local files only work with `llmtrain run`)."""
    documents = read_documents(EXAMPLES / "run.yaml")
    documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "shakespeare/*.txt"}}]
    return {d["kind"]: stored(d, i) for i, d in enumerate(documents)}


@pytest.fixture
def cluster() -> Context:
    return Context(
        storage_root="s3://models/llmtrain", s3_endpoint="http://seaweed:8333", storage_secret="llmtrain-storage"
    )


@pytest.fixture
def local_ctx(tmp_path) -> Context:
    return Context(local=True, base_dir=str(EXAMPLES), storage_root=str(tmp_path / "storage"))


@pytest.fixture
def run_world(bodies, cluster):
    deps = {("DataSource", "shakespeare"): ready(bodies["DataSource"])}
    job = desired_job(bodies["TrainingRun"], cluster, deps)

    def observe(job=job, pods=(), progress=None, body=None):
        obs = Observed(
            children={("Job", job["metadata"]["name"]): job}, pods=list(pods), dependencies=deps, progress=progress
        )
        return reconcile(body or bodies["TrainingRun"], obs, cluster, NOW)

    return job, observe

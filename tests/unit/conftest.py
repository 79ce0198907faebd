"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest

from llmtrain import storage


@pytest.fixture
def s3(monkeypatch):
    """An in-process S3 (moto) with one bucket, `bucket`; the client storage.py would make."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("LLMTRAIN_S3_ENDPOINT", raising=False)
    with mock_aws():
        client = storage.s3_client()
        client.create_bucket(Bucket="bucket")
        yield client

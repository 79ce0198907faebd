"""spec.tracking.mlflow: the credentials Secret reaches the trainer pods as files, and only when named."""

from __future__ import annotations

from llmtrain.core import pods
from support.trainer_job import trainer_job


def test_the_mlflow_credentials_secret_is_mounted_into_the_trainer():
    tracking = {"mlflow": {"uri": "https://mlflow.example.com", "credentialsSecretRef": {"name": "mlflow-token"}}}
    pod = trainer_job(tracking=tracking)["spec"]["template"]["spec"]
    volumes = [v for v in pod["volumes"] if "secret" in v]
    assert [v["secret"] for v in volumes] == [{"secretName": "mlflow-token", "defaultMode": 0o400}]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    mount = mounts[volumes[0]["name"]]
    assert mount["mountPath"] == f"{pods.SECRETS_DIR}/mlflow-token" and mount["readOnly"] is True
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert not {"MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD"} & env  # files, never the environment


def test_no_secret_without_credentials_or_tracking():
    for spec in ({}, {"tracking": {"mlflow": {"uri": "http://mlflow:5000"}}}):
        pod = trainer_job(**spec)["spec"]["template"]["spec"]
        assert not [v for v in pod["volumes"] if "secret" in v]

"""A dataset on S3 (SeaweedFS) read in place by 2 ranks through their node's block cache: the same
losses as the local copy, an exact resume with a fresh cache, each block fetched once per node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workload.test_train import dataset, losses, run_spec, train  # noqa: F401 - dataset is a fixture


def upload(directory: Path, client, bucket: str, prefix: str) -> int:
    """Every file under `directory` to `s3://bucket/prefix/`; the bytes of its shards."""
    client.create_bucket(Bucket=bucket)
    shard_bytes = 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        client.upload_file(str(path), bucket, f"{prefix}/{relative}")
        shard_bytes += path.stat().st_size if relative.endswith(".bin") else 0
    return shard_bytes


def fetched(cache: Path) -> list[int]:
    return [json.loads((cache / "shards" / "stats" / f"rank-{r}.json").read_text())["bytes_fetched"] for r in (0, 1)]


@pytest.mark.slow  # two ranks, S3, a resume: ~26 s
def test_two_ranks_read_an_s3_dataset_in_place_and_resume_exactly(tmp_path, dataset, s3_server):  # noqa: F811
    size = upload(dataset, s3_server.client(), "datasets", "corpus")
    spec = run_spec(tmp_path, steps=16, micro=4, accumulation=1)
    env = {**s3_server.env(), "LLMTRAIN_CACHE_DIR": str(tmp_path / "cache")}
    assert train(spec, dataset, tmp_path / "local", 2, env=env) == 0
    remote, outputs = "s3://datasets/corpus", tmp_path / "remote"
    assert train(spec, remote, outputs, 2, "--stop-at-step", "10", outputs=outputs, env=env) == 0
    assert not (tmp_path / "cache" / "datasets").exists()  # nothing copied whole
    assert 0 < sum(fetched(tmp_path / "cache")) <= size  # a block is fetched by one rank of the node
    env["LLMTRAIN_CACHE_DIR"] = str(tmp_path / "fresh-cache")  # a new pod: a cold cache
    assert train(spec, remote, outputs, 2, outputs=outputs, env=env) == 0
    assert losses(outputs) == losses(tmp_path / "local")

    # export reads the same S3 dataset in place too: validation blocks through the cache, the tokenizer
    export = {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": "tiny-export"},
        "spec": {"checkpointUri": str(outputs), "dataSourceRef": {"name": "corpus"}, "formats": ["safetensors"]},
    }
    (tmp_path / "export.yaml").write_text(yaml.safe_dump(export))
    cache = tmp_path / "export-cache"
    exported = subprocess.run(
        [
            *(sys.executable, "-m", "llmtrain.cli", "export", "-f", str(tmp_path / "export.yaml"), "--data", remote),
            *("--output", str(tmp_path / "export"), "--cache", str(cache)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads(exported.stdout.strip().splitlines()[-1])["passed"]
    manifest = json.loads((dataset / "manifest.json").read_text())
    train_bytes = sum((dataset / s["path"]).stat().st_size for s in manifest["splits"]["train"]["shards"])
    cached = sum(p.stat().st_size for p in (cache / "shards" / "blocks").rglob("*") if p.is_file())
    assert 0 < cached < train_bytes and not (cache / "datasets").exists()  # the train split is never copied

"""S3 in and out against a real S3 server (SeaweedFS, SigV4): listing, streaming, atomic outputs, and
the errors users meet (wrong keys, missing bucket), with credentials never printed."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import pytest

from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT


@pytest.fixture
def corpus_bucket(s3_server):
    """A bucket holding six plays as gzipped JSONL (one record per paragraph), plus a stray object."""
    bucket = f"corpora-{uuid.uuid4().hex[:8]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    for path in sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:6]:
        records = [json.dumps({"text": p}) for p in path.read_text().split("\n\n") if p.strip()]
        client.put_object(
            Bucket=bucket, Key=f"plays/{path.stem}.jsonl.gz", Body=gzip.compress("\n".join(records).encode())
        )
    client.put_object(Bucket=bucket, Key="elsewhere/ignored.txt", Body=b"not under the prefix")
    return bucket


@pytest.fixture
def secrets_dir(tmp_path, s3_server):
    """Secrets mounted as files, as the operator mounts them."""
    secret = tmp_path / "secrets" / "corpus-s3"
    secret.mkdir(parents=True)
    (secret / "AWS_ACCESS_KEY_ID").write_text(s3_server.access_key)
    (secret / "AWS_SECRET_ACCESS_KEY").write_text(s3_server.secret_key + "\n")
    return tmp_path / "secrets"


def s3_spec(s3_server, bucket, **extra):
    source = {
        "s3": {
            "bucket": bucket,
            "prefix": "plays/",
            "endpoint": s3_server.endpoint,
            "credentialsSecret": {"name": "corpus-s3"},
        }
    }
    return data_source(sources=[source], format="auto", validation={"minChars": 40}, **extra)


def test_s3_to_s3(tmp_path, s3_server, corpus_bucket, secrets_dir):
    """Three workers, every stage's work on S3 (parts read back with ranged GETs): the same tokens as one
    worker writing to a local folder."""
    client = s3_server.client()
    client.create_bucket(Bucket=f"{corpus_bucket}-out")
    output = f"s3://{corpus_bucket}-out/datasets/plays"
    spec = write_spec(tmp_path, s3_spec(s3_server, corpus_bucket))
    env = {**s3_server.env(), "LLMTRAIN_SECRETS_DIR": str(secrets_dir)}
    result = run_ingest("-f", str(spec), "--output", output, "--workers", "3", env=env)
    assert result.code == 0, result.stderr
    local = run_ingest("-f", str(spec), "--output", str(tmp_path / "local"), "--workers", "1", env=env)
    assert local.code == 0, local.stderr
    assert {k: v for k, v in result.report["stats"].items() if k != "seconds" and "PerSecond" not in k} == {
        k: v for k, v in local.report["stats"].items() if k != "seconds" and "PerSecond" not in k
    }
    assert result.report["stats"]["inputs"] == 6 and result.report["stats"]["documentsOut"] > 1000
    body = client.get_object(Bucket=f"{corpus_bucket}-out", Key="datasets/plays/manifest.json")["Body"].read()
    manifest = json.loads(body)
    local_manifest = json.loads((tmp_path / "local/manifest.json").read_text())
    for name, split in manifest["splits"].items():
        stream = b""
        for shard in split["shards"]:
            data = client.get_object(Bucket=f"{corpus_bucket}-out", Key=f"datasets/plays/{shard['path']}")[
                "Body"
            ].read()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert len(data) == 2 * shard["tokens"]
            stream += data
        listed = local_manifest["splits"][name]["shards"]
        assert stream == b"".join((tmp_path / "local" / s["path"]).read_bytes() for s in listed)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=f"{corpus_bucket}-out")["Contents"]]
    assert not [k for k in keys if "/.work/" in k]  # scan parts are cleaned up after the manifest


def test_wrong_secret_key_is_permanent_and_never_printed(tmp_path, s3_server, corpus_bucket, secrets_dir):
    (secrets_dir / "corpus-s3" / "AWS_SECRET_ACCESS_KEY").write_text("not-the-right-secret-value")
    spec = write_spec(tmp_path, s3_spec(s3_server, corpus_bucket))
    result = run_ingest(
        "-f", str(spec), "--output", str(tmp_path / "out"), env={"LLMTRAIN_SECRETS_DIR": str(secrets_dir)}
    )
    assert result.code == 2
    assert "the secret key is wrong: check the credentials Secret" in result.report["error"]
    assert "not-the-right-secret-value" not in result.stderr + json.dumps(result.report)


def test_missing_bucket_and_missing_secret(tmp_path, s3_server, secrets_dir):
    spec = write_spec(tmp_path, s3_spec(s3_server, "no-such-bucket-here"))
    result = run_ingest(
        "-f", str(spec), "--output", str(tmp_path / "out"), env={"LLMTRAIN_SECRETS_DIR": str(secrets_dir)}
    )
    assert result.code == 2 and "the bucket does not exist" in result.report["error"]
    result = run_ingest(
        "-f", str(spec), "--output", str(tmp_path / "out"), env={"LLMTRAIN_SECRETS_DIR": str(tmp_path / "nowhere")}
    )
    assert result.code == 2 and "Secret 'corpus-s3' has no key 'AWS_ACCESS_KEY_ID'" in result.report["error"]


def test_unreachable_endpoint_is_retryable(tmp_path, secrets_dir):
    source = {"s3": {"bucket": "corpora", "endpoint": "http://127.0.0.1:9", "credentialsSecret": {"name": "corpus-s3"}}}
    spec = write_spec(tmp_path, data_source(sources=[source]))
    result = run_ingest(
        "-f",
        str(spec),
        "--output",
        str(tmp_path / "out"),
        env={"LLMTRAIN_SECRETS_DIR": str(secrets_dir), "AWS_MAX_ATTEMPTS": "1"},
    )
    assert result.code == 75 and "cannot reach the S3 endpoint" in result.report["error"]


def test_s3_output_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(tmp_path, s3_server, corpus_bucket):
    """The lock object is created with a conditional PUT (If-None-Match: *): a held one refuses the writer
    (75, naming the owner), an expired one is taken over and released at the end."""
    from llmtrain import locking

    client = s3_server.client()
    client.create_bucket(Bucket=f"{corpus_bucket}-lock")
    output = f"s3://{corpus_bucket}-lock/datasets/plays"
    env = s3_server.env()
    lock = locking.acquire(output, client=client)  # held by this test process
    try:
        with pytest.raises(locking.OutputLocked, match=rf"locked by {lock.holder.owner} until "):
            locking.acquire(output, client=client)
    finally:
        locking.release(lock)
    assert "Contents" not in client.list_objects_v2(Bucket=f"{corpus_bucket}-lock")
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:3]:
        (data / path.name).write_bytes(path.read_bytes())
    spec = write_spec(tmp_path, data_source())
    held = {"host": "another-pod", "pid": 1, "token": "t", "expires": 4e9}
    client.put_object(Bucket=f"{corpus_bucket}-lock", Key="datasets/plays/.lock", Body=json.dumps(held).encode())
    refused = run_ingest("-f", str(spec), "--output", output, env=env)
    assert refused.code == 75 and "locked by another-pod/pid 1 until 2096-" in refused.report["error"]
    client.put_object(
        Bucket=f"{corpus_bucket}-lock", Key="datasets/plays/.lock", Body=json.dumps({**held, "expires": 1}).encode()
    )
    result = run_ingest("-f", str(spec), "--output", output, env=env)
    assert result.code == 0, result.stderr[-3000:]
    assert "stale lock taken over" in result.stderr
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=f"{corpus_bucket}-lock")["Contents"]]
    assert "datasets/plays/manifest.json" in keys and "datasets/plays/.lock" not in keys


def test_a_large_s3_jsonl_object_is_split_into_ranges_read_with_ranged_gets(tmp_path, s3_server, secrets_dir):
    """One plain jsonl object and workers 3: three record-aligned ranges, each part reading only its
    own bytes; the kept documents and token stream are a one-worker run's."""
    bucket = f"ranges-{uuid.uuid4().hex[:8]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    plays = sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:4]
    records = [json.dumps({"text": p}) for path in plays for p in path.read_text().split("\n\n") if len(p) > 80]
    client.put_object(Bucket=bucket, Key="plays/all.jsonl", Body=("\n".join(records) + "\n").encode())
    spec = write_spec(tmp_path, s3_spec(s3_server, bucket))
    env = {**s3_server.env(), "LLMTRAIN_SECRETS_DIR": str(secrets_dir)}
    streams, reports = {}, {}
    for workers in (1, 3):
        output = tmp_path / f"w{workers}"
        if workers == 3:  # scan the parts one by one, as pods, to see what each one read
            for index in range(3):
                part = run_ingest(
                    "-f",
                    str(spec),
                    "--output",
                    str(output),
                    "--stage",
                    "scan",
                    "--shard-index",
                    str(index),
                    "--shard-count",
                    "3",
                    env=env,
                )
                assert part.code == 0, part.stderr
                assert 0 < part.report["stats"]["bytesIn"] < 0.5 * sum(len(r) + 1 for r in records)
        result = run_ingest("-f", str(spec), "--output", str(output), "--workers", str(workers), env=env)
        assert result.code == 0, result.stderr
        manifest = json.loads((output / "manifest.json").read_text())
        streams[workers] = {
            split: b"".join((output / s["path"]).read_bytes() for s in listed["shards"])
            for split, listed in manifest["splits"].items()
        }
        reports[workers] = result.report["stats"]
    assert streams[1] == streams[3]
    assert reports[1]["documentsIn"] == reports[3]["documentsIn"] == len(records)
    assert reports[1]["inputs"] == reports[3]["inputs"] == 1

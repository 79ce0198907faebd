"""Storage URIs: local and pvc paths, atomic writes, and S3 (moto, in-process) with pagination."""

from __future__ import annotations

import pytest

from llmtrain import storage


def test_pvc_uris_map_under_the_pvc_root(monkeypatch, tmp_path):
    monkeypatch.setenv(storage.PVC_ROOT_ENV, str(tmp_path))
    assert storage.local_path("pvc://data/corpus/a.txt") == tmp_path / "data/corpus/a.txt"
    with pytest.raises(storage.StorageError, match="unsupported scheme"):
        storage.local_path("ftp://host/x")


def test_atomic_local_writes_leave_no_temporaries(tmp_path):
    target = str(tmp_path / "deep/dir/manifest.json")
    storage.write_bytes(target, b"{}")
    source = tmp_path / "staged.bin"
    source.write_bytes(b"shard")
    storage.upload_file(source, str(tmp_path / "deep/shard.bin"), move=True)
    assert not source.exists()
    names = sorted(p.name for p in (tmp_path / "deep").rglob("*"))
    assert names == ["dir", "manifest.json", "shard.bin"]
    assert [e.relative for e in storage.list_files(str(tmp_path / "deep"))] == ["dir/manifest.json", "shard.bin"]


def test_s3_listing_paginates_and_filters(s3):
    for i in range(1005):
        s3.put_object(Bucket="bucket", Key=f"corpus/part-{i:04d}.jsonl", Body=b"x")
    s3.put_object(Bucket="bucket", Key="corpus/README.md", Body=b"x")
    entries = storage.list_files("s3://bucket/corpus/", "*.jsonl", client=s3)
    assert len(entries) == 1005 and entries[0].relative == "part-0000.jsonl"


def test_s3_read_write_exists_delete(s3):
    storage.write_bytes("s3://bucket/out/manifest.json", b"{}", client=s3)
    assert storage.exists("s3://bucket/out/manifest.json", client=s3)
    assert storage.read_bytes("s3://bucket/out/manifest.json", client=s3) == b"{}"
    storage.delete_tree("s3://bucket/out", client=s3)
    assert not storage.exists("s3://bucket/out/manifest.json", client=s3)
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.read_bytes("s3://bucket/missing", client=s3)
    with pytest.raises(storage.StorageError, match="the bucket does not exist"):
        storage.list_files("s3://nope/x", client=s3)


def test_download_cache_is_keyed_by_etag_not_size(s3, tmp_path):
    """A cached file is reused only while the object's ETag is the one recorded: an object rewritten with
    other bytes of the same size (a run recreated under the same name) is downloaded again."""
    s3.put_object(Bucket="bucket", Key="ckpt/step-1/shard.bin", Body=b"first-bytes")
    s3.put_object(Bucket="bucket", Key="ckpt/step-1/meta.json", Body=b"{}")
    target = tmp_path / "cache"
    storage.download_tree("s3://bucket/ckpt/step-1", target, client=s3)
    assert (target / "shard.bin").read_bytes() == b"first-bytes"
    (target / "meta.json").write_bytes(b"[]")  # same size, same ETag upstream: served from the cache
    s3.put_object(Bucket="bucket", Key="ckpt/step-1/shard.bin", Body=b"other-bytes")  # same size, new ETag
    storage.download_tree("s3://bucket/ckpt/step-1", target, client=s3)
    assert (target / "shard.bin").read_bytes() == b"other-bytes"
    assert (target / "meta.json").read_bytes() == b"[]"
    assert sorted(p.name for p in target.iterdir()) == [".downloaded.json", "meta.json", "shard.bin"]  # no temps

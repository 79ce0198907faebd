"""Remote shards through the node's block cache (moto S3, 4 KiB blocks): the same windows as a local
copy byte for byte, a fraction of the dataset fetched, the LRU bound, corrupt blocks refused, old
manifests read whole, and two processes sharing one cache directory."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from llmtrain import storage
from llmtrain.data import shards as shard_format
from llmtrain.data.shards import BlockHashes, ShardWriter
from llmtrain.train.loader import Batches, DataError, Dataset
from llmtrain.train.remote_data import RemoteDataset, shard_blocks
from llmtrain.train.shard_cache import BUDGET_ENV, Block, BlockCache, budget_from_env

BLOCK = 4096
SHARD_TOKENS = 10_000  # 20,000 bytes: four full blocks and a partial one


def write_dataset(root: str, staging: Path, monkeypatch) -> dict:
    """Three train shards and one validation shard of tokens below 512, and their manifest, at `root`."""
    monkeypatch.setattr(shard_format, "BLOCK_BYTES", BLOCK)
    tokens = np.random.default_rng(0).integers(0, 512, size=3 * SHARD_TOKENS + 1234 + 4000, dtype=np.uint16)
    splits = {}
    for split, part in (("train", tokens[: 3 * SHARD_TOKENS + 1234]), ("validation", tokens[-4000:])):
        writer = ShardWriter(split, root, np.dtype(np.uint16), SHARD_TOKENS, staging)
        for piece in np.array_split(part, 7):  # pieces that straddle blocks and shards
            writer.add(piece)
        infos = writer.close()
        splits[split] = {"tokens": len(part), "shards": [s.to_json() for s in infos]}
    manifest = {"dtype": "uint16", "tokenizer": {"vocabSize": 512}, "splits": splits}
    storage.write_bytes(storage.join(root, "manifest.json"), json.dumps(manifest).encode())
    return manifest


@pytest.fixture
def datasets(s3, tmp_path, monkeypatch) -> tuple[Dataset, RemoteDataset]:
    """The same dataset on local disk and on S3, the S3 one read through a cache."""
    write_dataset(str(tmp_path / "local"), tmp_path / "staging", monkeypatch)
    write_dataset("s3://bucket/data", tmp_path / "staging", monkeypatch)
    cache = BlockCache(tmp_path / "cache", 1 << 30, client=s3, stats_name="rank-0")
    return Dataset.open(tmp_path / "local"), RemoteDataset.open_remote("s3://bucket/data", cache, s3)


def test_block_digests_do_not_depend_on_how_the_bytes_arrive(monkeypatch):
    monkeypatch.setattr(shard_format, "BLOCK_BYTES", BLOCK)
    data = np.random.default_rng(1).bytes(3 * BLOCK + 17)
    expected = [hashlib.sha256(data[i : i + BLOCK]).hexdigest() for i in range(0, len(data), BLOCK)]
    for cut in (1, 100, BLOCK, BLOCK + 1, len(data)):
        hashes = BlockHashes()
        for start in range(0, len(data), cut):
            hashes.update(data[start : start + cut])
        assert hashes.finish() == expected


def test_windows_through_the_cache_equal_the_local_ones(datasets):
    local, remote = datasets
    assert remote.vocab_size == 512 and remote.location == "s3://bucket/data"
    local_stream, remote_stream = local.stream("train"), remote.stream("train")
    assert len(local_stream) == len(remote_stream) == 3 * SHARD_TOKENS + 1234
    boundaries = [BLOCK // 2 - 3, 2 * BLOCK // 2 - 1, SHARD_TOKENS - 10, 2 * SHARD_TOKENS - 65, 3 * SHARD_TOKENS - 1]
    starts = boundaries + list(np.random.default_rng(2).integers(0, len(local_stream) - 5000, size=40))
    for start in starts:
        for length in (1, 65, 2 * BLOCK + 3, 5000):
            length = min(length, len(local_stream) - int(start))
            a, b = local_stream.window(int(start), length), remote_stream.window(int(start), length)
            assert a.dtype == b.dtype == np.int64 and np.array_equal(a, b)
    assert np.array_equal(local.stream("validation").window(0, 4000), remote.stream("validation").window(0, 4000))
    remote.verify_shards()  # nothing read up front
    remote.check_token_range()


def test_a_short_run_fetches_a_fraction_of_the_dataset(datasets):
    local, remote = datasets
    size = sum(s["tokens"] * 2 for s in remote.shards())
    batches = [Batches(d.stream("train"), d.stream("validation"), 64, 2, 1, 0, 2, 7) for d in (local, remote)]
    for step in range(1, 4):
        for (x, y), (rx, ry) in zip(batches[0].step(step), batches[1].step(step), strict=True):
            assert x.equal(rx) and y.equal(ry)
    stats = remote.cache.stats
    assert 0 < stats.bytes_fetched < size / 2
    assert json.loads(remote.cache.stats_path.read_text())["bytes_fetched"] == stats.bytes_fetched
    fetched = stats.bytes_fetched
    batches[1].step(1)  # the same windows again: all hits
    assert remote.cache.stats.bytes_fetched == fetched


def test_the_cache_stays_within_its_budget_least_recently_used_first(datasets, tmp_path, s3):
    _local, remote = datasets
    cache = BlockCache(tmp_path / "small", 3 * BLOCK, client=s3)
    shard = RemoteDataset(remote.root, remote.manifest, remote.uri, cache).stream("train").arrays[0]
    for block in range(5):
        shard[block * BLOCK // 2 : block * BLOCK // 2 + 1]
        assert cache.used_bytes() <= 3 * BLOCK
    assert cache.stats.blocks_fetched == 5 and cache.stats.blocks_evicted == 2
    shard[4 * BLOCK // 2 : 4 * BLOCK // 2 + 1]  # the newest block is kept
    assert cache.stats.blocks_fetched == 5
    shard[0:1]  # the oldest one was evicted
    assert cache.stats.blocks_fetched == 6 and cache.used_bytes() <= 3 * BLOCK


def test_a_changed_block_is_refused(datasets, s3):
    local, remote = datasets
    key = "data/train/shard-00001.bin"
    data = bytearray(s3.get_object(Bucket="bucket", Key=key)["Body"].read())
    data[2 * BLOCK + 5] ^= 1
    s3.put_object(Bucket="bucket", Key=key, Body=bytes(data))
    stream = remote.stream("train")
    assert np.array_equal(stream.window(SHARD_TOKENS, 100), local.stream("train").window(SHARD_TOKENS, 100))
    with pytest.raises(DataError, match=r"shard-00001.bin: bytes 8192-12287 differ from manifest.json"):
        stream.window(SHARD_TOKENS + BLOCK, 10)
    digest = remote.manifest["splits"]["train"]["shards"][1]["blockSha256"][2]
    assert remote.cache.stats.blocks_fetched == 1 and not (remote.cache.blocks / digest).exists()


def test_a_manifest_without_block_digests_reads_each_shard_whole_once(datasets, s3):
    local, remote = datasets
    manifest = json.loads(json.dumps(remote.manifest))
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            del shard["blockSize"], shard["blockSha256"]
    old = RemoteDataset(remote.root, manifest, remote.uri, remote.cache)
    a, b = local.stream("train").window(SHARD_TOKENS - 50, 3000), old.stream("train").window(SHARD_TOKENS - 50, 3000)
    assert np.array_equal(a, b)
    assert old.cache.stats.bytes_fetched == 2 * SHARD_TOKENS * 2  # two whole shards, verified by their SHA-256
    s3.put_object(Bucket="bucket", Key="data/train/shard-00002.bin", Body=b"\0" * SHARD_TOKENS * 2)
    with pytest.raises(DataError, match=r"shard-00002\.bin: bytes 0-19999 differ from manifest\.json"):
        old.stream("train").window(2 * SHARD_TOKENS + 1, 10)


def test_block_lists_that_do_not_fit_the_shard_are_refused():
    shard = {"path": "train/shard-00000.bin", "tokens": 3000, "sha256": "0" * 64, "blockSize": BLOCK}
    with pytest.raises(DataError, match="blockSize and blockSha256 do not fit"):
        shard_blocks("s3://b/d/train/shard-00000.bin", {**shard, "blockSha256": ["0" * 64]}, 2)
    assert len(shard_blocks("s3://b/x", {**shard, "blockSha256": ["0" * 64] * 2}, 2)) == 2


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert budget_from_env() == 4 << 30
    monkeypatch.setenv(BUDGET_ENV, "1048576")
    assert budget_from_env() == 1 << 20
    for bad in ("lots", "0"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(DataError, match=BUDGET_ENV):
            budget_from_env()


def _read_every_block(directory: str, blocks: list[Block], barrier) -> None:
    cache = BlockCache(Path(directory), 1 << 30, stats_name=f"pid-{multiprocessing.current_process().pid}")
    barrier.wait(timeout=60)
    for block in blocks:
        assert (
            cache.read(block, 0, block.length) == Path(block.uri).read_bytes()[block.start : block.start + block.length]
        )


def test_two_processes_sharing_the_cache_fetch_each_block_once(tmp_path):
    source = tmp_path / "shard.bin"
    source.write_bytes(np.random.default_rng(3).bytes(40 * BLOCK))
    data = source.read_bytes()
    blocks = [
        Block(str(source), start, BLOCK, hashlib.sha256(data[start : start + BLOCK]).hexdigest())
        for start in range(0, len(data), BLOCK)
    ]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_read_every_block, args=(str(tmp_path / "cache"), blocks, barrier)) for _ in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    stats = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "stats").glob("*.json")]
    assert len(stats) == 2 and sum(s["blocks_fetched"] for s in stats) == len(blocks)
    stored = sorted((tmp_path / "cache" / "blocks").iterdir())
    assert [p.name for p in stored] == sorted(b.sha256 for b in blocks)
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in stored)

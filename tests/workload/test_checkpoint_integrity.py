"""The real `llmtrain train` and `llmtrain export` on tampered storage: crafted files run nothing, a flipped
KiB or an overwritten dataset shard is exit 2 naming the file, a corrupt newest checkpoint is skipped
(resume from the one before, said in the audit stream and the progress report), a swapped tokenizer is
refused before export. Tiny model, 8-16 steps."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from workload.test_export import export, trained  # noqa: F401 - `trained` is a fixture
from workload.test_train import dataset, run_spec, train_command  # noqa: F401 - `dataset` is a fixture

from llmtrain import storage
from llmtrain.train import checkpoint, safe_load


class Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def run_train(spec: Path, data: Path, checkpoints: Path) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(spec, data, checkpoints), capture_output=True, text=True, timeout=300)


def flip_kib(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1024] = bytes(b ^ 0xFF for b in data[middle : middle + 1024])
    path.write_bytes(bytes(data))


def craft_metadata(directory: Path, marker: Path) -> None:
    """A `.metadata` that runs a command when unpickled, with meta.json's digests made to match."""
    (directory / ".metadata").write_bytes(pickle.dumps(Marker(marker)))
    meta = json.loads((directory / "meta.json").read_text())
    meta["files"][".metadata"] = safe_load.digest(directory / ".metadata")
    (directory / "meta.json").write_text(json.dumps(meta))


def audit_events(stderr: str, event: str) -> list[dict]:
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == event]


def test_resume_skips_a_corrupt_checkpoint_says_so_and_keeps_it(tmp_path, dataset):  # noqa: F811
    checkpoints = tmp_path / "ckpt"
    assert run_train(run_spec(tmp_path, steps=16), dataset, checkpoints).returncode == 0
    flip_kib(checkpoints / "step-00000016" / "__0_0.distcp")
    process = run_train(run_spec(tmp_path, steps=24), dataset, checkpoints)
    assert process.returncode == 0, process.stderr[-3000:]
    (skipped,) = audit_events(process.stderr, "CheckpointSkipped")
    assert "step-00000016" in skipped["reason"] and "__0_0.distcp: SHA-256 differs" in skipped["reason"]
    assert audit_events(process.stderr, "Resumed")[0]["step"] == 8
    report = json.loads((tmp_path / "ckpt-progress.json").read_text())
    assert any(a["type"] == "CheckpointSkipped" and "__0_0.distcp" in a["message"] for a in report["alerts"])
    (quarantined,) = (checkpoints / "quarantine").iterdir()  # kept aside, never overwritten
    assert (quarantined / "meta.json").exists() and (checkpoints / "latest").read_text() == "step-00000024"


def s3_objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under a prefix, by key relative to it."""
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix) :]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


class S3Run:
    """The tiny run checkpointing to s3://BUCKET/tiny on the test server; keepLast 5 (retention keeps all)."""

    def __init__(self, tmp_path: Path, dataset: Path, server, bucket: str) -> None:  # noqa: F811
        self.tmp, self.dataset, self.server, self.bucket = tmp_path, dataset, server, bucket
        self.client = server.client()
        self.client.create_bucket(Bucket=bucket)
        self.remote, self.cache = f"s3://{bucket}/tiny", tmp_path / "cache"

    def train(self, steps: int) -> subprocess.CompletedProcess:
        spec = run_spec(self.tmp, steps, checkpointing={"keepLast": 5})
        command = train_command(spec, self.dataset, self.remote, outputs=self.tmp / "s3")
        env = {**os.environ, **self.server.env(), "LLMTRAIN_CACHE_DIR": str(self.cache)}
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    def objects(self, prefix: str) -> dict[str, bytes]:
        return s3_objects(self.client, self.bucket, f"tiny/{prefix}")

    def cache_download(self, name: str) -> Path:
        """What a resume leaves in the trainer's cache: the checkpoint downloaded, its ETags recorded."""
        with pytest.MonkeyPatch.context() as patch:
            for key, value in self.server.env().items():
                patch.setenv(key, value)
            return storage.download_tree(f"{self.remote}/{name}", self.cache / "checkpoints" / "tiny" / name)


def flipped(data: bytes) -> bytes:
    """`data` with 1 KiB in the middle inverted (same size)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 1024]) + data[middle + 1024 :]


def test_a_corrupt_checkpoint_on_s3_is_quarantined_there_and_resume_takes_the_one_before(
    tmp_path,
    dataset,  # noqa: F811
    s3_server,
):
    """The newest checkpoint's shard overwritten on S3 with flipped bytes, while the trainer's local cache
    still holds the intact download of it (ETags recorded): the rerun verifies what S3 holds now, resumes
    from the checkpoint before, says so, and moves the corrupt one, every object of it, to quarantine/ on S3.
    No complete checkpoint is overwritten or deleted."""
    run = S3Run(tmp_path, dataset, s3_server, "integrity")
    assert run.train(16).returncode == 0
    step8, step16 = run.objects("step-00000008/"), run.objects("step-00000016/")
    cached = run.cache_download("step-00000016")
    corrupt = {**step16, "__0_0.distcp": flipped(step16["__0_0.distcp"])}
    run.client.put_object(Bucket="integrity", Key="tiny/step-00000016/__0_0.distcp", Body=corrupt["__0_0.distcp"])
    assert (cached / "__0_0.distcp").read_bytes() == step16["__0_0.distcp"] != corrupt["__0_0.distcp"]

    process = run.train(24)
    assert process.returncode == 0, process.stderr[-3000:]
    (skipped,) = audit_events(process.stderr, "CheckpointSkipped")
    assert "step-00000016" in skipped["reason"] and "__0_0.distcp: SHA-256 differs" in skipped["reason"]
    assert audit_events(process.stderr, "Resumed")[0]["step"] == 8
    report = json.loads((tmp_path / "s3-progress.json").read_text())
    assert any(a["type"] == "CheckpointSkipped" and "__0_0.distcp" in a["message"] for a in report["alerts"])
    quarantined = run.objects("quarantine/")
    (where,) = {key.split("/")[0] for key in quarantined}
    assert where.startswith("step-00000016-")
    assert {k[len(where) + 1 :]: v for k, v in quarantined.items()} == corrupt  # every object, as it was
    assert run.objects("step-00000008/") == step8  # the checkpoint before: untouched
    assert run.objects("step-00000016/")["meta.json"] != step16["meta.json"]  # saved anew
    assert run.objects("latest") == {"": b"step-00000024"}


def test_a_damaged_local_copy_of_an_intact_s3_checkpoint_is_downloaded_again_not_quarantined(
    tmp_path,
    dataset,  # noqa: F811
    s3_server,
):
    """The cached download of the newest checkpoint damaged on local disk (same size, ETags recorded): the
    checkpoint on S3 is intact, so the rerun downloads it again and resumes from it; nothing is skipped."""
    run = S3Run(tmp_path, dataset, s3_server, "localdamage")
    assert run.train(16).returncode == 0
    step16 = run.objects("step-00000016/")
    shard = run.cache_download("step-00000016") / "__0_0.distcp"
    shard.write_bytes(flipped(shard.read_bytes()))
    process = run.train(24)
    assert process.returncode == 0, process.stderr[-3000:]
    assert audit_events(process.stderr, "Resumed")[0]["step"] == 16
    assert not audit_events(process.stderr, "CheckpointSkipped") and not run.objects("quarantine/")
    assert run.objects("step-00000016/") == step16


def test_export_downloads_again_when_its_cached_copy_is_damaged(tmp_path, dataset, s3_server, monkeypatch):  # noqa: F811
    """Export judges an S3 checkpoint on what S3 holds: a cached copy damaged on local disk (same size, ETags
    recorded) is downloaded again, not reported as a corrupt checkpoint."""
    from llmtrain.export import checkpoint as export_checkpoint

    run = S3Run(tmp_path, dataset, s3_server, "exportcache")
    assert run.train(8).returncode == 0
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    cache = tmp_path / "export-cache"
    found = export_checkpoint.resolve(run.remote)
    first = export_checkpoint.load(found, cache).state_dict()
    shards = list(cache.rglob("__0_0.distcp"))
    assert len(shards) == 1
    shards[0].write_bytes(flipped(shards[0].read_bytes()))
    again = export_checkpoint.load(found, cache).state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert shards[0].read_bytes() == run.objects("step-00000008/")["__0_0.distcp"]


def test_an_incomplete_quarantine_copy_on_s3_is_an_error_before_anything_is_deleted(s3_server, monkeypatch):
    """The quarantine copies, then deletes: a copy that lost an object is refused (retryable) and is never
    followed by the delete; an S3 error while copying is a StorageError naming the object."""
    client, real_client = s3_server.client(), storage.s3_client
    client.create_bucket(Bucket="copycheck")
    for name in (".metadata", "__0_0.distcp", "meta.json"):
        client.put_object(Bucket="copycheck", Key=f"run/step-00000008/{name}", Body=name.encode())
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)

    def losing(key: str):
        def s3_client(*args, **kwargs):
            inner = real_client(*args, **kwargs)
            original = inner.copy
            inner.copy = lambda source, *rest, **kw: (
                None if source["Key"].endswith(key) else original(source, *rest, **kw)
            )
            return inner

        return s3_client

    monkeypatch.setattr(storage, "s3_client", losing("__0_0.distcp"))
    with pytest.raises(storage.StorageError, match=r"copy to .* is incomplete; the original is kept") as caught:
        checkpoint._copy_s3_tree("s3://copycheck/run/step-00000008", "s3://copycheck/run/quarantine/a")
    assert caught.value.retryable
    monkeypatch.setattr(storage, "s3_client", real_client)
    with pytest.raises(storage.StorageError, match=re.escape("step-00000008/.metadata -> s3://nobucket/q")):
        checkpoint._copy_s3_tree("s3://copycheck/run/step-00000008", "s3://nobucket/q")
    assert len(s3_objects(client, "copycheck", "run/step-00000008/")) == 3


def test_corrupt_or_crafted_checkpoint_files_are_exit_2_and_run_nothing(tmp_path, dataset):  # noqa: F811
    checkpoints, marker = tmp_path / "ckpt", tmp_path / "pwned"
    spec = run_spec(tmp_path, steps=8)
    assert run_train(spec, dataset, checkpoints).returncode == 0
    longer = run_spec(tmp_path, steps=16)
    pristine = tmp_path / "pristine"
    shutil.copytree(checkpoints, pristine)
    flip_kib(checkpoints / "step-00000008" / "__0_0.distcp")
    process = run_train(longer, dataset, checkpoints)
    assert process.returncode == 2 and "__0_0.distcp: SHA-256 differs from meta.json" in process.stderr
    assert "no complete checkpoint verifies" in process.stderr and "Traceback" not in process.stderr
    assert (checkpoints / "step-00000008" / "meta.json").exists()  # nothing overwritten, nothing deleted
    shutil.rmtree(checkpoints)
    shutil.copytree(pristine, checkpoints)
    craft_metadata(checkpoints / "step-00000008", marker)
    process = run_train(longer, dataset, checkpoints)
    assert process.returncode == 2 and ".metadata: not a checkpoint metadata file" in process.stderr
    assert not marker.exists()


def test_an_overwritten_dataset_shard_is_exit_2_naming_it(tmp_path, dataset):  # noqa: F811
    copied = tmp_path / "data"
    shutil.copytree(dataset, copied)
    shard = copied / "train" / "shard-00000-00000.bin"
    shard.write_bytes(bytes(len(shard.read_bytes())))  # same size, other tokens
    process = run_train(run_spec(tmp_path, steps=8), copied, tmp_path / "ckpt")
    assert process.returncode == 2 and "shard-00000-00000.bin: SHA-256 differs from manifest.json" in process.stderr
    assert not (tmp_path / "ckpt" / "latest").exists()


@pytest.fixture
def checkpoint_copy(tmp_path, trained) -> tuple[Path, Path]:  # noqa: F811
    data, checkpoints = trained
    shutil.copytree(checkpoints, tmp_path / "ckpt")
    return data, tmp_path / "ckpt"


def test_export_of_a_corrupt_checkpoint_is_exit_2_naming_the_file(tmp_path, checkpoint_copy):
    data, checkpoints = checkpoint_copy
    flip_kib(checkpoints / "step-00000016" / "__0_0.distcp")
    code, report, _ = export(tmp_path, data, checkpoints)
    assert code == 2 and "__0_0.distcp: SHA-256 differs from meta.json" in report["error"]
    assert not report.get("passed") and not (tmp_path / "out" / "export-report.json").exists()


def test_export_refuses_a_crafted_metadata_file_and_an_escaping_pointer(tmp_path, checkpoint_copy):
    data, checkpoints = checkpoint_copy
    marker = tmp_path / "pwned"
    craft_metadata(checkpoints / "step-00000016", marker)
    code, report, _ = export(tmp_path, data, checkpoints)
    assert code == 2 and ".metadata: not a checkpoint metadata file" in report["error"] and not marker.exists()
    outside = tmp_path / "outside"
    shutil.copytree(checkpoints / "step-00000008", outside / "step-00000008")
    (checkpoints / "latest").write_text("../outside/step-00000008")
    code, report, _ = export(tmp_path, data, checkpoints)
    assert code == 2 and "not the name of a checkpoint directory" in report["error"]


def test_export_refuses_a_swapped_tokenizer(tmp_path, trained):  # noqa: F811
    data, checkpoints = trained
    copied = tmp_path / "data"
    shutil.copytree(data, copied)
    other = Tokenizer(models.BPE())
    other.pre_tokenizer = pre_tokenizers.ByteLevel()
    texts = [p.read_text() for p in sorted((data.parent / "data").glob("*.txt"))]
    other.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    other.save(str(copied / "tokenizer" / "tokenizer.json"))
    code, report, _ = export(tmp_path, copied, checkpoints)
    assert code == 2 and "the tokenizer has 300 ids, the model 512" in report["error"]

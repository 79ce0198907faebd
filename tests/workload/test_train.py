"""`llmtrain train` on real shards: FSDP2 parity, exact resume after SIGKILL, resharding, SIGTERM,
retention, divergence, progress. Tiny model (2 layers, width 64, vocab 512, sequence 64); 2 gloo ranks
under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from support.ingest import data_source, run_ingest, write_spec
from support.paths import ROOT
from support.seaweed import Seaweed

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    (directory / "data").mkdir()
    for path in sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:6]:
        (directory / "data" / path.name).write_bytes(path.read_bytes())
    spec = write_spec(directory, data_source(tokenizer={"vocabSize": 512}, split={"validationFraction": 0.2}))
    result = run_ingest("-f", str(spec), "--output", str(directory / "out"))
    assert result.code == 0, result.stderr
    return directory / "out"


def run_spec(tmp: Path, steps: int = 24, micro: int = 4, accumulation: int = 2, **extra) -> Path:
    spec = {
        "dataSourceRef": {"name": "corpus"},
        "model": {"layers": 2, "hiddenSize": 64, "heads": 4, "kvHeads": 2, "intermediateSize": 128, "maxSeqLen": 64},
        "training": {
            "maxSteps": steps,
            "microBatchSize": micro,
            "gradientAccumulationSteps": accumulation,
            "precision": "fp32",
            "logEverySteps": 1,
            "optimizer": {"lr": 0.003},
            "scheduler": {"warmupSteps": 4},
        },
        "validation": {"everySteps": 8, "batches": 2},
        "checkpointing": {"everySteps": 8, "keepLast": 2, "keepBest": 1},
    }
    for key, value in extra.items():
        spec[key] = {**spec.get(key, {}), **value}
    path = tmp / f"run-{micro}x{accumulation}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"apiVersion": "llmtrain.dev/v1alpha1", "kind": "TrainingRun", "metadata": {"name": "tiny"}, "spec": spec}
        )
    )
    return path


def train_command(
    spec: Path, data: Path, checkpoints: Path | str, ranks: int = 1, *extra: str, outputs: Path | None = None
) -> list[str]:
    """The command; progress and metrics go beside `outputs` (default: the checkpoint directory)."""
    outputs = outputs or Path(checkpoints)
    args = [
        *("-m", "llmtrain.cli", "train", "-f", str(spec), "--data", str(data), "--checkpoints", str(checkpoints)),
        *("--progress", str(outputs.parent / f"{outputs.name}-progress.json")),
        *("--metrics-dir", str(outputs.parent / f"{outputs.name}-metrics")),
        *extra,
    ]
    if ranks == 1:
        return [sys.executable, *args]
    return [*TORCHRUN, f"--nproc_per_node={ranks}", *args]


def train(spec: Path, data: Path, checkpoints: Path | str, ranks: int = 1, *extra: str, env=None, outputs=None) -> int:
    process = subprocess.run(
        train_command(spec, data, checkpoints, ranks, *extra, outputs=outputs),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    if process.returncode not in (0, 3, 75):
        print(process.stderr[-4000:])
    return process.returncode


def losses(checkpoints: Path) -> dict[int, float]:
    """Loss by step from the metrics JSONL (a resumed run appends to it)."""
    path = checkpoints.parent / f"{checkpoints.name}-metrics" / "metrics.jsonl"
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}


def wait_for_step(checkpoints: Path, step: int, timeout: float = 120) -> None:
    """Until the metrics file (one line per step) shows `step`."""
    path = checkpoints.parent / f"{checkpoints.name}-metrics" / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= step:
            return
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def final_weights(checkpoints: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    latest = (checkpoints / "latest").read_text().strip()
    target = checkpoints.parent / f"{checkpoints.name}-{latest}.pt"
    dcp_to_torch_save(str(checkpoints / latest), str(target))
    return torch.load(target, weights_only=False)["model"]


def test_fsdp_two_ranks_match_one_process_with_accumulation(tmp_path, dataset):
    """One process accumulating 2 micro-batches sees the same global batch as 2 ranks with 1 each."""
    assert train(run_spec(tmp_path, micro=4, accumulation=2), dataset, tmp_path / "one") == 0
    assert train(run_spec(tmp_path, micro=4, accumulation=1), dataset, tmp_path / "two", 2) == 0
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 24
    assert max(abs(one[s] - two[s]) for s in one) < 1e-4
    assert one[24] < one[1] - 0.5  # it learns


def test_sigkill_then_resume_is_bit_exact(tmp_path, dataset):
    spec = run_spec(tmp_path, steps=64, training={"deterministic": True})  # CPUs are regardless; the flag runs
    assert train(spec, dataset, tmp_path / "clean") == 0
    checkpoints = tmp_path / "killed"
    process = subprocess.Popen(
        train_command(spec, dataset, checkpoints), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_step(checkpoints, 13)  # past the first checkpoint (step 8), mid-interval
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed_from = int((checkpoints / "latest").read_text().split("-")[1])
    assert 8 <= resumed_from < 64
    assert train(spec, dataset, checkpoints) == 0
    clean, resumed = losses(tmp_path / "clean"), losses(checkpoints)
    assert all(resumed[s] == clean[s] for s in range(resumed_from + 1, 65))  # bit for bit
    a, b = final_weights(tmp_path / "clean"), final_weights(checkpoints)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_a_different_world_size(tmp_path, dataset):
    """2 ranks to step 16, then 1 rank (same global batch) to 24: matches an uninterrupted 2-rank run."""
    two_rank_spec = run_spec(tmp_path, micro=4, accumulation=1)
    assert train(two_rank_spec, dataset, tmp_path / "two", 2) == 0
    resharded = tmp_path / "resharded"
    assert train(two_rank_spec, dataset, resharded, 2, "--stop-at-step", "16") == 0
    assert train(run_spec(tmp_path, micro=4, accumulation=2), dataset, resharded, 1) == 0
    two, mixed = losses(tmp_path / "two"), losses(resharded)
    assert max(abs(two[s] - mixed[s]) for s in range(17, 25)) < 1e-4


def test_sigterm_saves_a_checkpoint_and_exits_retryable(tmp_path, dataset):
    spec = run_spec(tmp_path, steps=400)
    checkpoints = tmp_path / "term"
    process = subprocess.Popen(
        train_command(spec, dataset, checkpoints), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    progress = checkpoints.parent / "term-progress.json"
    wait_for_step(checkpoints, 3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 75
    saved = int((checkpoints / "latest").read_text().split("-")[1])
    report = json.loads(progress.read_text())
    assert report["phase"] == "Interrupted" and report["latestCheckpoint"]["step"] == saved == report["step"]
    assert max(losses(checkpoints)) == saved  # zero lost steps: the checkpoint holds every completed step


def test_retention_progress_and_metrics(tmp_path, dataset):
    checkpoints = tmp_path / "ret"
    assert train(run_spec(tmp_path, steps=40), dataset, checkpoints) == 0
    names = sorted(p.name for p in checkpoints.iterdir())
    best = (checkpoints / "best").read_text()
    kept = {"step-00000032", "step-00000040", best}
    assert set(names) == {"best", "latest", *kept}
    meta = json.loads((checkpoints / "step-00000040" / "meta.json").read_text())
    assert meta["step"] == 40 and meta["worldSize"] == 1 and meta["tokensSeen"] == 40 * 8 * 64
    assert meta["model"]["hidden_size"] == 64 and meta["valLoss"] > 0
    report = json.loads((tmp_path / "ret-progress.json").read_text())
    assert report["version"] == 1 and report["phase"] == "Succeeded" and report["step"] == report["totalSteps"] == 40
    assert report["bestCheckpoint"]["uri"].endswith(best) and report["tokensPerSecond"] > 0 and report["mfu"] > 0
    assert report["valLoss"] < 6.3 and report["perplexity"] > 1
    records = [json.loads(line) for line in (tmp_path / "ret-metrics" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "gradNorm", "tokensPerSecond", "mfu", "memoryMiB"} <= records[0].keys()
    assert any("val/accuracy" in r for r in records)
    assert list((tmp_path / "ret-metrics" / "tensorboard").iterdir())
    # tokens/s counts training time: the steps after a checkpoint + validation (every 8) are not slower
    after_pause = statistics.median(r["tokensPerSecond"] for r in records if r["step"] % 8 == 1 and r["step"] > 1)
    others = statistics.median(r["tokensPerSecond"] for r in records if r["step"] % 8 not in (0, 1))
    assert after_pause > 0.5 * others, (after_pause, others)


def test_nonfinite_loss_saves_last_good_state_and_exits_3(tmp_path, dataset):
    checkpoints = tmp_path / "nan"
    code = train(run_spec(tmp_path), dataset, checkpoints, env={"LLMTRAIN_INJECT_NONFINITE_LOSS_AT_STEP": "13"})
    assert code == 3
    assert (checkpoints / "latest").read_text() == "step-00000013"
    assert json.loads((checkpoints / "step-00000013" / "meta.json").read_text())["diverged"] is True
    report = json.loads((tmp_path / "nan-progress.json").read_text())
    assert report["phase"] == "Failed" and report["failure"]["reason"] == "NonFiniteLoss"
    assert report["alerts"][-1]["type"] == "NonFiniteLoss" and report["alerts"][-1]["severity"] == "critical"


def test_bad_inputs_are_permanent(tmp_path, dataset):
    assert train(run_spec(tmp_path), tmp_path / "no-dataset", tmp_path / "a") == 2
    assert train(run_spec(tmp_path, steps=8), dataset, tmp_path / "shape") == 0
    wider = run_spec(tmp_path, model={"hiddenSize": 128})
    process = subprocess.run(train_command(wider, dataset, tmp_path / "shape"), capture_output=True, text=True)
    assert process.returncode == 2 and "use a new checkpoint URI" in process.stderr
    mismatched = tmp_path / "mismatched"
    shutil.copytree(dataset, mismatched)
    manifest = json.loads((mismatched / "manifest.json").read_text())
    manifest["tokenizer"]["vocabSize"] = 100
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    process = subprocess.run(
        train_command(run_spec(tmp_path), mismatched, tmp_path / "m"), capture_output=True, text=True
    )
    assert process.returncode == 2 and "shards and manifest come from different runs" in process.stderr


@pytest.mark.slow
def test_example_run_trains_and_the_loss_falls(tmp_path):
    """examples/run.yaml end to end on one machine: ingest, then the full 300-step TrainingRun."""
    assert run_ingest("-f", str(ROOT / "examples/run.yaml"), "--output", str(tmp_path / "data")).code == 0
    checkpoints = tmp_path / "ckpt"
    command = train_command(ROOT / "examples/run.yaml", tmp_path / "data", checkpoints)
    assert subprocess.run(command, capture_output=True, timeout=900).returncode == 0
    history = losses(checkpoints)
    assert history[10] > 7.0 and history[300] < 5.0  # ln(4096) = 8.3 at the start
    report = json.loads((tmp_path / "ckpt-progress.json").read_text())
    assert report["phase"] == "Succeeded" and report["valLoss"] < 5.5


def test_checkpoints_on_s3_resume_exactly(tmp_path, dataset, s3_server):
    """Checkpoints written to a real S3 server (SeaweedFS), paused, then resumed from S3."""
    s3_server.client().create_bucket(Bucket="checkpoints")
    spec = run_spec(tmp_path, steps=16)
    env = {**s3_server.env(), "LLMTRAIN_CACHE_DIR": str(tmp_path / "cache")}
    local = tmp_path / "local"
    assert train(spec, dataset, local, 1, env=env) == 0
    remote, outputs = "s3://checkpoints/tiny", tmp_path / "s3"
    assert train(spec, dataset, remote, 1, "--stop-at-step", "10", outputs=outputs, env=env) == 0
    env["LLMTRAIN_CACHE_DIR"] = str(tmp_path / "fresh-cache")  # resume reads the checkpoint back from S3
    assert train(spec, dataset, remote, 1, outputs=outputs, env=env) == 0
    assert losses(outputs) == losses(local)
    client = s3_server.client()
    assert client.get_object(Bucket="checkpoints", Key="tiny/latest")["Body"].read() == b"step-00000016"
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="checkpoints", Prefix="tiny/step-00000016/")["Contents"]}
    assert {"tiny/step-00000016/meta.json", "tiny/step-00000016/.metadata", "tiny/step-00000016/__0_0.distcp"} <= keys


def test_s3_outage_mid_run_is_retryable_and_the_rerun_resumes_exactly(tmp_path, dataset):
    """SeaweedFS killed after the first checkpoint: the next save fails, the trainer exits 75 (retryable)
    saying why, `latest` still names the last complete checkpoint; S3 comes back on the same data and the
    rerun resumes from it and reproduces an uninterrupted run bit for bit."""
    weed = Seaweed()
    try:
        server = weed.start()
        server.client().create_bucket(Bucket="checkpoints")
        spec = run_spec(tmp_path, steps=24)  # checkpoints every 8
        env = {**server.env(), "LLMTRAIN_CACHE_DIR": str(tmp_path / "cache")}
        assert train(spec, dataset, tmp_path / "clean", 1, env=env) == 0
        remote, outputs = "s3://checkpoints/outage", tmp_path / "s3"
        process = subprocess.Popen(
            train_command(spec, dataset, remote, outputs=outputs),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        wait_for_step(outputs, 10)  # past the first checkpoint (step 8)
        weed.stop()
        out, err = process.communicate(timeout=300)
        assert process.returncode == 75, err[-3000:]
        # the save of step 16 failed and says where (a refused connection, or the gateway's 500 meanwhile)
        assert "s3://checkpoints/outage/step-00000016" in out + err
        weed.start()
        latest = server.client().get_object(Bucket="checkpoints", Key="outage/latest")["Body"].read()
        assert latest == b"step-00000008"
        assert train(spec, dataset, remote, 1, outputs=outputs, env=env) == 0
        assert losses(outputs) == losses(tmp_path / "clean")
    finally:
        weed.close()


def test_full_disk_is_a_clear_failure_and_keeps_the_last_good_checkpoint(tmp_path, dataset):
    """Checkpoints on a 2 MiB tmpfs: the first one fits, the second fills the disk. The trainer fails
    saying so, and `latest` still names the first, which loads."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        checkpoints = disk / "ckpt"
        spec = run_spec(tmp_path, steps=24)
        process = subprocess.run(
            train_command(spec, dataset, checkpoints, outputs=tmp_path / "full"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert process.returncode == 2, process.stderr[-3000:]  # permanent: a person must free space
        assert "no space left on device while saving step 16" in process.stderr
        assert "the last complete checkpoint (step-00000008) is intact" in process.stderr
        assert "Traceback" not in process.stderr, process.stderr[-3000:]
        assert (checkpoints / "latest").read_text() == "step-00000008"
        assert not (checkpoints / "step-00000016").exists()  # the partial save gave its space back
        shutil.copytree(checkpoints, tmp_path / "copied")  # converted off the full disk
        assert final_weights(tmp_path / "copied")  # the last good checkpoint loads
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)  # lazy: a lingering reader cannot pin it

"""Reliability drills: kill the workloads at random points, many times, and check what must hold.

    python bench/reliability.py trainer --trials 20 [--ranks 2]   SIGKILL of a random rank at a random step
    python bench/reliability.py background --trials 5 [--ranks 2] SIGKILL of a random rank during a background save
    python bench/reliability.py sigterm --trials 5               SIGTERM at a random step
    python bench/reliability.py ingest --trials 20               SIGKILL at a random time
    python bench/reliability.py export --trials 10               SIGKILL at a random time
    python bench/reliability.py all [--out FILE]                 all five, JSON to FILE too

Each drill prints one JSON object: what was injected, the trials, how many held each property, and the
figures (lost steps, seconds). Seeded (`--seed`): a rerun injects at the same points. The real CLIs run in
subprocesses on a small Shakespeare corpus (examples/data), on the CPU, where training is deterministic:
"bit for bit" is checked, not approximated. docs/reliability.md holds the recorded results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.pause import pause_env  # noqa: E402
from support.tiny_run import tiny_run  # noqa: E402

CLI = [sys.executable, "-m", "llmtrain.cli"]
CHECKPOINT_EVERY = 8


# -- inputs ----------------------------------------------------------------------------------------


def corpus(work: Path) -> Path:
    """The 13 plays, four edited copies each (paragraph units, MinHash on): a few seconds of ingest."""
    data = work / "data"
    data.mkdir(parents=True)
    for copy in range(4):
        for path in sorted((ROOT / "examples/data/shakespeare").glob("*.txt")):
            (data / f"{copy}-{path.name}").write_text(path.read_text() + f"\nCopy {copy}.\n" * 200)
    spec = {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": "drill"},
        "spec": {
            "sources": [{"local": {"path": "data/*.txt"}}],
            "txtUnit": "paragraph",
            "dedup": {"minhash": {"enabled": True}},
            "tokenizer": {"type": "bpe", "vocabSize": 1024},
            "validation": {"minChars": 100},
            "split": {"validationFraction": 0.2},
            "output": {"shardTokens": 50_000},
        },
    }
    (work / "datasource.yaml").write_text(yaml.safe_dump(spec))
    return work / "datasource.yaml"


def run_spec(work: Path, steps: int, ranks: int) -> Path:
    """The workload tests' tiny model (tests/support/tiny_run.py); the same global batch (8 sequences) on 1
    or 2 ranks."""
    spec = tiny_run(
        "drill",
        "drill",
        steps,
        accumulation=2 // ranks,
        validation={"everySteps": 16},
        checkpointing={"everySteps": CHECKPOINT_EVERY},
    )
    path = work / f"run-{steps}-{ranks}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def export_spec(work: Path) -> Path:
    spec = {
        "apiVersion": "llmtrain.dev/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": "drill-export"},
        "spec": {"trainingRunRef": {"name": "drill"}, "formats": ["safetensors", "torchscript"]},
    }
    (work / "export.yaml").write_text(yaml.safe_dump(spec))
    return work / "export.yaml"


# -- processes -------------------------------------------------------------------------------------


def train_command(spec: Path, data: Path, checkpoints: Path, ranks: int) -> list[str]:
    args = ["train", "-f", str(spec), "--data", str(data), "--checkpoints", str(checkpoints)]
    args += ["--metrics-dir", str(checkpoints.parent / f"{checkpoints.name}-metrics")]
    if ranks == 1:
        return [*CLI, *args]
    # as a trainer pod runs it: `llmtrain launch -- torchrun ...` (the launcher keeps the workers' exit code)
    return [*CLI, "launch", "--", "--standalone", f"--nproc-per-node={ranks}", "-m", "llmtrain.cli", *args]


def environment() -> dict[str, str]:
    """A termination-message file per process tree, as a pod has (the launcher reads it back)."""
    handle, path = tempfile.mkstemp(prefix="drill-termination-")
    os.close(handle)
    return {**os.environ, "LLMTRAIN_TERMINATION_LOG": path}


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment())


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**environment(), **(env or {})},
    )


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def rank_of(pid: int) -> int | None:
    try:
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
    return int(values[b"RANK"]) if b"RANK" in values else None


def steps_logged(metrics_dir: Path) -> list[int]:
    path = metrics_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for(condition, timeout: float = 300, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the drill's condition never held")
        time.sleep(interval)


def losses(metrics_dir: Path) -> dict[int, float]:
    """Loss by step; a resumed run appends, so the last record of a step wins."""
    path = metrics_dir / "metrics.jsonl"
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}


def final_weights(checkpoints: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    latest = (checkpoints / "latest").read_text().strip()
    target = checkpoints.parent / f"{checkpoints.name}-{latest}.pt"
    dcp_to_torch_save(str(checkpoints / latest), str(target))
    return torch.load(target, weights_only=False)["model"]


def is_temporary(path: Path) -> bool:
    """A write in progress (`.<name>.tmp-<pid>`): left behind by a kill, never read as data."""
    return path.name.startswith(".") and ".tmp-" in path.name


def tree_digest(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in exclude and not is_temporary(p)
    }


def temporaries(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if is_temporary(p)) if root.exists() else 0


def dataset_digest(output: Path) -> dict[str, Any]:
    """Every file's hash, and the manifest without its timestamp and timings (which differ run to run)."""
    files = tree_digest(output, exclude=("manifest.json",))
    manifest = json.loads((output / "manifest.json").read_text())
    manifest.pop("createdAt")
    for key in ("seconds", "megabytesPerSecond"):
        manifest["stats"].pop(key)
    return {"files": files, "manifest": manifest}


def report_state(output: Path) -> str:
    """absent; complete (every artifact it lists is there with its recorded size and hash); or BROKEN."""
    from llmtrain.export.artifacts import digest

    path = output / "export-report.json"
    if not path.exists():
        return "absent"
    for artifact in json.loads(path.read_text())["artifacts"]:
        local = Path(artifact["uri"])
        if not local.exists() or digest(local) != (artifact["bytes"], artifact["sha256"]):
            return "BROKEN"
    return "complete"


def manifest_is_whole(output: Path) -> bool | None:
    """None: no manifest; True: it exists and every shard it names has its recorded hash."""
    path = output / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            file = output / shard["path"]
            if not file.exists() or hashlib.sha256(file.read_bytes()).hexdigest() != shard["sha256"]:
                return False
    return True


# -- drills ----------------------------------------------------------------------------------------


def ingest_clean(work: Path) -> tuple[Path, Path, float]:
    spec = corpus(work)
    started = time.monotonic()
    result = run([*CLI, "ingest", "-f", str(spec), "--output", str(work / "clean-data")])
    assert result.returncode == 0, result.stderr[-3000:]
    return spec, work / "clean-data", time.monotonic() - started


def uninterrupted(work: Path, steps: int, ranks: int) -> tuple[Path, Path, dict[str, torch.Tensor], dict[int, float]]:
    """The clean dataset and an uninterrupted run of `steps` on it: (spec, data, final weights, losses)."""
    _, data, _ = ingest_clean(work)
    spec = run_spec(work, steps, ranks)
    clean = work / "clean"
    result = run(train_command(spec, data, clean, ranks))
    assert result.returncode == 0, result.stderr[-3000:]
    return spec, data, final_weights(clean), losses(work / "clean-metrics")


def drill_trainer(work: Path, trials: int, ranks: int, rng: random.Random) -> dict[str, Any]:
    steps = 64
    spec, data, reference, reference_losses = uninterrupted(work, steps, ranks)
    outcomes = []
    for trial in range(trials):
        checkpoints = work / f"killed-{trial}"
        metrics = checkpoints.parent / f"{checkpoints.name}-metrics"
        target = rng.randint(2, steps - 2)
        process = start(train_command(spec, data, checkpoints, ranks))
        wait_for(lambda: len(steps_logged(metrics)) >= target)  # noqa: B023 - waited for in this iteration
        victims = {rank_of(pid): pid for pid in descendants(process.pid)} if ranks > 1 else {0: process.pid}
        rank = rng.choice(sorted(r for r in victims if r is not None))
        os.kill(victims[rank], signal.SIGKILL)
        killed_at = max(steps_logged(metrics))
        process.wait(timeout=120)
        latest = checkpoints / "latest"
        resumed_from = int(latest.read_text().split("-")[1]) if latest.exists() else 0
        rerun = run(train_command(spec, data, checkpoints, ranks))
        after = losses(metrics)
        weights = final_weights(checkpoints)
        outcomes.append(
            {
                "target_step": target,
                "rank_killed": rank,
                "killed_after_step": killed_at,
                "resumed_from": resumed_from,
                "lost_steps": killed_at - resumed_from,
                "completed": rerun.returncode == 0 and max(after) == steps,
                "losses_bit_exact": all(after[s] == reference_losses[s] for s in range(resumed_from + 1, steps + 1)),
                "weights_bit_exact": all(torch.equal(weights[k], reference[k]) for k in reference),
            }
        )
        shutil.rmtree(checkpoints)
        print(json.dumps(outcomes[-1]), file=sys.stderr, flush=True)
    return {
        "injected": f"SIGKILL of a random rank ({ranks} rank(s)) at a random step of {steps}",
        "trials": trials,
        "completed": sum(o["completed"] for o in outcomes),
        "losses_bit_exact": sum(o["losses_bit_exact"] for o in outcomes),
        "weights_bit_exact": sum(o["weights_bit_exact"] for o in outcomes),
        "lost_steps_max": max(o["lost_steps"] for o in outcomes),
        "lost_steps_mean": round(sum(o["lost_steps"] for o in outcomes) / trials, 2),
        "checkpoint_interval": CHECKPOINT_EVERY,
        "ranks_killed": sorted({o["rank_killed"] for o in outcomes}),
        "outcomes": outcomes,
    }


def drill_background(work: Path, trials: int, ranks: int, rng: random.Random) -> dict[str, Any]:
    """The write of a random checkpoint (step N) held in its background thread on every rank (state staged,
    nothing written) while training goes on 1-7 steps past it; then SIGKILL of a random rank. The previous
    checkpoint (N - 8) must be `latest`, intact, and the rerun from it bit for bit."""
    steps = 64
    spec, data, reference, reference_losses = uninterrupted(work, steps, ranks)
    outcomes = []
    for trial in range(trials):
        checkpoints, marker = work / f"held-{trial}", work / f"paused-{trial}"
        metrics = checkpoints.parent / f"{checkpoints.name}-metrics"
        held = CHECKPOINT_EVERY * rng.randint(2, steps // CHECKPOINT_EVERY - 1)
        target = held + rng.randint(1, CHECKPOINT_EVERY - 1)
        process = start(train_command(spec, data, checkpoints, ranks), pause_env(f"checkpoint-write:{held}", marker))
        wait_for(marker.exists)
        wait_for(lambda: len(steps_logged(metrics)) >= target)  # noqa: B023 - waited for in this iteration
        victims = {rank_of(pid): pid for pid in descendants(process.pid)} if ranks > 1 else {0: process.pid}
        rank = rng.choice(sorted(r for r in victims if r is not None))
        os.kill(victims[rank], signal.SIGKILL)
        killed_at = max(steps_logged(metrics))
        marker.unlink()  # the other ranks' held writes go on, meet the dead rank and fail
        process.wait(timeout=120)
        latest = checkpoints / "latest"
        kept = latest.exists() and latest.read_text() == f"step-{held - CHECKPOINT_EVERY:08d}"
        rerun = run(train_command(spec, data, checkpoints, ranks))
        after = losses(metrics)
        weights = final_weights(checkpoints)
        outcomes.append(
            {
                "held_step": held,
                "rank_killed": rank,
                "killed_after_step": killed_at,
                "previous_checkpoint_is_latest": kept,
                "completed": rerun.returncode == 0 and max(after) == steps,
                "losses_bit_exact": all(
                    after[s] == reference_losses[s] for s in range(held - CHECKPOINT_EVERY + 1, steps + 1)
                ),
                "weights_bit_exact": all(torch.equal(weights[k], reference[k]) for k in reference),
            }
        )
        shutil.rmtree(checkpoints)
        print(json.dumps(outcomes[-1]), file=sys.stderr, flush=True)
    return {
        "injected": f"SIGKILL of a random rank ({ranks} rank(s)) while a checkpoint's background write is held,"
        " 1-7 steps after its save began",
        "trials": trials,
        "trained_on_during_the_write": sum(o["killed_after_step"] > o["held_step"] for o in outcomes),
        "previous_checkpoint_is_latest": sum(o["previous_checkpoint_is_latest"] for o in outcomes),
        "completed": sum(o["completed"] for o in outcomes),
        "losses_bit_exact": sum(o["losses_bit_exact"] for o in outcomes),
        "weights_bit_exact": sum(o["weights_bit_exact"] for o in outcomes),
        "outcomes": outcomes,
    }


def drill_sigterm(work: Path, trials: int, ranks: int, rng: random.Random) -> dict[str, Any]:
    _, data, _ = ingest_clean(work)
    steps = 400
    spec = run_spec(work, steps, ranks)
    outcomes = []
    for trial in range(trials):
        checkpoints = work / f"term-{trial}"
        metrics = checkpoints.parent / f"{checkpoints.name}-metrics"
        target = rng.randint(2, 60)
        process = start(train_command(spec, data, checkpoints, ranks))
        wait_for(lambda: len(steps_logged(metrics)) >= target)  # noqa: B023
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        seconds = time.monotonic() - signalled
        saved = int((checkpoints / "latest").read_text().split("-")[1]) if (checkpoints / "latest").exists() else 0
        completed = max(steps_logged(metrics))
        outcomes.append(
            {
                "target_step": target,
                "exit_code": code,
                "completed_steps": completed,
                "checkpoint_step": saved,
                "lost_steps": completed - saved,
                "seconds_to_exit": round(seconds, 2),
            }
        )
        print(json.dumps(outcomes[-1]), file=sys.stderr, flush=True)
    return {
        "injected": "SIGTERM at a random step, to "
        + (
            f"`llmtrain launch` (a pod's main process), forwarded through torchrun to {ranks} ranks"
            if ranks > 1
            else "the trainer"
        ),
        "trials": trials,
        "exited_75": sum(o["exit_code"] == 75 for o in outcomes),
        "zero_lost_steps": sum(o["lost_steps"] == 0 for o in outcomes),
        "seconds_to_exit_max": max(o["seconds_to_exit"] for o in outcomes),
        "outcomes": outcomes,
    }


def drill_ingest(work: Path, trials: int, rng: random.Random) -> dict[str, Any]:
    spec, clean, seconds = ingest_clean(work)
    reference = dataset_digest(clean)
    outcomes = []
    for trial in range(trials):
        output = work / f"crash-{trial}"
        delay = rng.uniform(0.05, 0.95) * seconds
        process = start([*CLI, "ingest", "-f", str(spec), "--output", str(output)])
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        finished_first = process.wait() == 0
        whole = manifest_is_whole(output)
        rerun = run([*CLI, "ingest", "-f", str(spec), "--output", str(output)])
        outcomes.append(
            {
                "killed_after_s": round(delay, 2),
                "finished_before_the_kill": finished_first,
                "manifest_after_kill": {None: "absent", True: "whole", False: "BROKEN"}[whole],
                "rerun_ok": rerun.returncode == 0,
                "identical_to_clean": rerun.returncode == 0 and dataset_digest(output) == reference,
                "temporary_files_left": temporaries(output),
            }
        )
        shutil.rmtree(output)
        print(json.dumps(outcomes[-1]), file=sys.stderr, flush=True)
    return {
        "injected": f"SIGKILL at a uniformly random time in 5-95% of a clean run ({seconds:.1f} s)",
        "trials": trials,
        "manifest_never_broken": sum(o["manifest_after_kill"] != "BROKEN" for o in outcomes),
        "killed_before_the_manifest": sum(o["manifest_after_kill"] == "absent" for o in outcomes),
        "rerun_identical_to_clean": sum(o["rerun_ok"] and o["identical_to_clean"] for o in outcomes),
        "temporary_files_left": sum(o["temporary_files_left"] for o in outcomes),
        "outcomes": outcomes,
    }


def drill_export(work: Path, trials: int, rng: random.Random) -> dict[str, Any]:
    _, data, _ = ingest_clean(work)
    checkpoints = work / "ckpt"
    result = run(train_command(run_spec(work, 16, 1), data, checkpoints, 1))
    assert result.returncode == 0, result.stderr[-3000:]
    spec = export_spec(work)

    def command(output: Path) -> list[str]:
        paths = ["--checkpoint", str(checkpoints), "--data", str(data), "--output", str(output)]
        return [*CLI, "export", "-f", str(spec), *paths, "--cache", str(work / "cache")]

    started = time.monotonic()
    result = run(command(work / "clean-export"))
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    reference = tree_digest(work / "clean-export", exclude=("export-report.json",))
    outcomes = []
    for trial in range(trials):
        output = work / f"export-{trial}"
        delay = rng.uniform(0.05, 0.95) * seconds
        process = start(command(output))
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        finished_first = process.wait() == 0
        reported = report_state(output)
        rerun = run(command(output))
        outcomes.append(
            {
                "killed_after_s": round(delay, 2),
                "finished_before_the_kill": finished_first,
                "report_after_kill": reported,
                "rerun_ok": rerun.returncode == 0,
                "artifacts_identical_to_clean": tree_digest(output, exclude=("export-report.json",)) == reference,
                "temporary_files_left": temporaries(output),
            }
        )
        shutil.rmtree(output)
        print(json.dumps(outcomes[-1]), file=sys.stderr, flush=True)
    killed = [o for o in outcomes if not o["finished_before_the_kill"]]
    return {
        "injected": f"SIGKILL at a uniformly random time in 5-95% of a clean export ({seconds:.1f} s)",
        "trials": trials,
        "killed_mid_export": len(killed),
        "report_absent_after_the_kill": sum(o["report_after_kill"] == "absent" for o in killed),
        "report_complete_after_the_kill": sum(o["report_after_kill"] == "complete" for o in killed),
        "report_broken_after_the_kill": sum(o["report_after_kill"] == "BROKEN" for o in killed),
        "rerun_identical_to_clean": sum(o["rerun_ok"] and o["artifacts_identical_to_clean"] for o in outcomes),
        "temporary_files_left": sum(o["temporary_files_left"] for o in outcomes),
        "outcomes": outcomes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drill", choices=["trainer", "background", "sigterm", "ingest", "export", "all"])
    parser.add_argument(
        "--trials", type=int, help="default: 20 (trainer, ingest), 5 (background, sigterm), 10 (export)"
    )
    parser.add_argument("--ranks", type=int, default=2, choices=[1, 2])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    defaults = {"trainer": 20, "background": 5, "sigterm": 5, "ingest": 20, "export": 10}
    drills = list(defaults) if args.drill == "all" else [args.drill]
    results = {}
    for name in drills:
        trials = args.trials or defaults[name]
        rng = random.Random(f"{args.seed}-{name}")
        with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as tmp:
            started = time.monotonic()
            if name in ("trainer", "background", "sigterm"):
                runner = {"trainer": drill_trainer, "background": drill_background, "sigterm": drill_sigterm}[name]
                results[name] = runner(Path(tmp), trials, args.ranks, rng)
            else:
                results[name] = (drill_ingest if name == "ingest" else drill_export)(Path(tmp), trials, rng)
            results[name]["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(results if args.drill == "all" else results[args.drill], indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()

"""The operator under progress load: N TrainingRuns whose trainers each report progress every second.

The operator runs as its own process against the emulated API server (as in bench/operator_faults.py,
whose setup it reuses); writer threads play N trainers, patching each run's progress ConfigMap every
`--interval` seconds, as `ConfigMapSink` does, for `--seconds`; then every run reports its last step. It
measures the progress writes the API took, the operator's status writes (its own counter,
`llmtrain_status_writes_total`) against the throttle (one progress-only write per run per
`LLMTRAIN_STATUS_INTERVAL`), the operator's memory, and how long until every run's status shows its
final step (a lost final status would never show).

    python bench/operator_load.py [--runs 1000] [--interval 1] [--seconds 60] [--out FILE]
                                 [--operator-source DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from operator_faults import GROUP, NS, Drill

STATUS_INTERVAL = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def counter(port: int, name: str) -> float:
    """A TrainingRun counter from the operator's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    prefix = f'{name}{{kind="TrainingRun"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def status_writes(port: int) -> float:
    return counter(port, "llmtrain_status_writes_total")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


def operator_reads(drill: Drill) -> int:
    verbs = drill.api.server.verbs
    return verbs[("llmtrain-operator", "get")] + verbs[("llmtrain-operator", "list")]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(name: str, step: int, total: int) -> dict:
    return {
        "version": 1,
        "run": name,
        "phase": "Running",
        "step": step,
        "totalSteps": total,
        "tokensSeen": step * 2048,
        "loss": round(8.0 - 3.0 * step / total + random.random() * 0.01, 4),
        "tokensPerSecond": 5000 + random.randint(0, 100),
        "mfu": 0.3,
        "eta": f"{total - step}s",
        "updatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between one trainer's reports")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the trainers report")
    parser.add_argument("--writers", type=int, default=16, help="threads playing the trainers")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="let the operator and the harness share every CPU"
    )
    parser.add_argument(
        "--operator-source",
        type=Path,
        help="run the operator from this checkout (`git worktree add DIR COMMIT`): a baseline in the same conditions",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmtrain-operator-load-"))
    drill = Drill(work, random.Random(0))
    source = args.operator_source or Path(__file__).resolve().parent.parent
    if args.operator_source:
        drill.env["PYTHONPATH"] = f"{source / 'operator'}:{source / 'trainer'}"
    port = free_port()
    drill.env.update(
        LLMTRAIN_METRICS_PORT=str(port), LLMTRAIN_STATUS_INTERVAL=str(STATUS_INTERVAL), LLMTRAIN_RESYNC_SECONDS="30"
    )
    describe = ["git", "-C", str(source), "describe", "--always", "--dirty"]
    commit = subprocess.run(describe, capture_output=True, text=True)
    result: dict = {
        "operator_commit": commit.stdout.strip(),
        "runs": args.runs,
        "interval_s": args.interval,
        "status_interval_s": STATUS_INTERVAL,
    }
    try:
        drill.ingest()
        names = [f"load-{i:05d}" for i in range(args.runs)]
        for name in names:
            run = copy.deepcopy(drill.documents[1])
            run["metadata"]["name"] = name
            drill.custom.create_namespaced_custom_object(*GROUP, "trainingruns", run)
        deadline = time.monotonic() + 600
        while len([c for c in drill.store.list("ConfigMap", NS) if c["metadata"]["name"].endswith("-progress")]) < len(
            names
        ):
            if time.monotonic() > deadline:
                raise SystemExit("the progress ConfigMaps were not all created")
            time.sleep(1)
        time.sleep(STATUS_INTERVAL + 2)  # the creation burst's status writes are done
        result["operator_rss_mib_before"] = round(rss_mib(drill.operator.pid), 1)
        if args.pin and (os.cpu_count() or 1) >= 2:  # the operator on CPU 0; API server and trainers on the rest
            pin(drill.operator.pid, {0})
            pin(os.getpid(), set(range(1, os.cpu_count() or 2)))
            result["pinned"] = "operator: CPU 0; emulated API server and trainers: the other CPUs"
        total = drill.documents[1]["spec"]["training"]["maxSteps"]
        step = {name: 0 for name in names}
        sent = failed = 0
        lock = threading.Lock()

        def send(name: str, final: bool = False) -> None:
            nonlocal sent, failed
            step[name] = total if final else min(step[name] + 1, total - 1)
            body = {"data": {"progress.json": json.dumps(report(name, step[name], total))}}
            try:
                drill.store.patch("ConfigMap", NS, f"{name}-progress", body)
                with lock:
                    sent += 1
            except Exception:
                with lock:
                    failed += 1

        writes_before = status_writes(port)
        reconciles_before = counter(port, "llmtrain_reconciles_total")
        cpu_before = cpu_seconds(drill.operator.pid)
        reads_before = operator_reads(drill)
        started = time.monotonic()
        lag = []
        with concurrent.futures.ThreadPoolExecutor(args.writers) as pool:
            tick = started
            while tick - started < args.seconds:
                list(pool.map(send, names))
                lag.append(time.monotonic() - tick)  # > interval: the API could not take the rate
                tick += args.interval
                time.sleep(max(0.0, tick - time.monotonic()))
            elapsed = time.monotonic() - started
            writes = status_writes(port) - writes_before
            reconciles = counter(port, "llmtrain_reconciles_total") - reconciles_before
            cpu = cpu_seconds(drill.operator.pid) - cpu_before
            reads = operator_reads(drill) - reads_before
            result.update(
                progress_patches=sent,
                progress_patches_failed=failed,
                progress_patches_per_s=round(sent / elapsed, 1),
                asked_per_s=round(args.runs / args.interval, 1),
                round_seconds_max=round(max(lag), 2),
                status_writes=int(writes),
                status_writes_per_s=round(writes / elapsed, 1),
                operator_reads=reads,  # GETs and LISTs the operator's reconciles made (not kopf's watches)
                operator_reads_per_s=round(reads / elapsed, 1),
                reconciles=int(reconciles),
                operator_cpu_s=round(cpu, 1),
                operator_cpu_ms_per_reconcile=round(1000 * cpu / max(reconciles, 1), 2),
                throttle_limit=args.runs * (int(elapsed // STATUS_INTERVAL) + 1),  # one per run per interval
                operator_rss_mib_after=round(rss_mib(drill.operator.pid), 1),
            )
            final_sent = time.monotonic()
            list(pool.map(lambda n: send(n, final=True), names))
        waiting = set(names)
        while waiting and time.monotonic() - final_sent < 120:
            for body in drill.store.list("TrainingRun", NS):
                if (body.get("status") or {}).get("step") == total:
                    waiting.discard(body["metadata"]["name"])
            time.sleep(1)
        result.update(
            final_status_missing=len(waiting),
            final_status_all_shown_after_s=round(time.monotonic() - final_sent, 1) if not waiting else None,
        )
    finally:
        drill.kill()
        drill.api.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

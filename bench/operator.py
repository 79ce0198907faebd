"""The operator at scale: apply -> Job-created latency (p50/p99), time to reconcile N TrainingRuns to their
Jobs, and the operator's memory (RSS) with N runs, against the emulated API server and the real one
(etcd, kube-apiserver, controller-manager, scheduler and a node agent: tests/support/real_cluster.py), in
the same run, with the same workload.

The operator runs as its own process (`python -m llmtrain_operator`, the real kopf shell). One DataSource
is ingested for real first (on the emulator the local Job executor runs `llmtrain ingest`; on the real
control plane the real Job controller and the node agent do); then the runs are created one after
another as fast as the client can, each with `suspend: true` (the real Job controller would otherwise
start 1,000 trainer pods), and a watch on Jobs timestamps each Job.
Targets (issue 6): p50 <= 50 ms, 1,000 runs <= 60 s, RSS <= 200 MB.

    python bench/operator.py [--runs 1000] [--api emulated|real|both] [--operator-source DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from llmtrain.local.executor import Executor  # noqa: E402
from llmtrain_operator.kubestore import KubeStore  # noqa: E402
from support.kube_api import ServerThread  # noqa: E402
from support.real_cluster import ControlPlane, default_bin_dir  # noqa: E402

NS = "bench"
GROUP = ("llmtrain.dev", "v1alpha1", NS)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Emulated:
    """The emulated API server in this process; the local executor runs the ingest pod."""

    name = "emulated"

    def __init__(self, work: Path) -> None:
        self.work = work
        shutil.copytree(ROOT / "examples" / "data" / "shakespeare", work / "volumes" / "corpus" / "shakespeare")
        self.api = ServerThread().start()
        config = kubernetes.client.Configuration()
        config.host = self.api.url
        self.client = kubernetes.client.ApiClient(config)
        self.operator_env = {"LLMTRAIN_KUBE_API": self.api.url}

    def ingest(self, custom, ready) -> None:
        executor = Executor(KubeStore(self.api.url), self.work, NS, kube_api=self.api.url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ready():
            executor.sync()
            time.sleep(0.2)
        executor.shutdown()

    def requests(self) -> dict:
        total: dict[str, int] = {}  # by verb, every client
        for (_, verb), count in self.api.server.verbs.items():
            total[verb] = total.get(verb, 0) + count
        by_operator = {verb: n for (agent, verb), n in self.api.server.verbs.items() if agent == "llmtrain-operator"}
        return {
            "api_requests": total,
            "operator_requests": dict(sorted(by_operator.items())),
            "api_writes": self.api.server.writes,
        }

    def stop(self) -> None:
        self.api.stop()


class Real:
    """The real control plane with one node agent (its pods: the ingest); the operator logs in as admin."""

    name = "real"

    def __init__(self, work: Path) -> None:
        self.cp = ControlPlane(default_bin_dir(), work / "cluster", nodes=1, capacity="cpu=16,memory=64Gi")
        self.cp.start()
        self.cp.wait_ready(120)
        self.client = kubernetes.config.new_client_from_config(config_file=str(self.cp.kubeconfig))
        self.cp.prepare_namespace(NS, claims=("corpus", "llmtrain-storage"))
        shutil.copytree(ROOT / "examples" / "data" / "shakespeare", self.cp.volumes / NS / "corpus" / "shakespeare")
        self.operator_env = {"KUBECONFIG": str(self.cp.kubeconfig)}
        self.baseline = self._counts()

    def ingest(self, custom, ready) -> None:
        deadline = time.monotonic() + 180  # the real Job controller makes the pod, the node agent runs it
        while time.monotonic() < deadline and not ready():
            time.sleep(0.5)

    def _counts(self) -> dict[str, int]:
        """apiserver_request_total by verb (every client: the real server has no per-client label)."""
        _, body = self.cp.get("/metrics", timeout=30)
        counts: dict[str, int] = {}
        for line in body.decode().splitlines():
            if line.startswith("apiserver_request_total{"):
                labels, value = line.rsplit(" ", 1)
                verb = labels.split('verb="', 1)[1].split('"', 1)[0]
                counts[verb] = counts.get(verb, 0) + int(float(value))
        return counts

    def requests(self) -> dict:
        now = self._counts()
        return {"api_requests": {verb: now[verb] - self.baseline.get(verb, 0) for verb in sorted(now)}}

    def stop(self) -> None:
        self.cp.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=50, help="single applies timed one at a time")
    parser.add_argument("--api", choices=["emulated", "real", "both"], default="both")
    parser.add_argument(
        "--operator-source",
        type=Path,
        help="run the operator from this checkout (`git worktree add DIR COMMIT`): a baseline in the same conditions",
    )
    args = parser.parse_args()
    backends = [Emulated, Real] if args.api == "both" else [Emulated if args.api == "emulated" else Real]
    results = {backend.name: measure(backend, args) for backend in backends}
    print(json.dumps({**results, "runs": args.runs, "cpu_count": os.cpu_count()}, indent=2))


def measure(backend_type, args) -> dict:
    source = args.operator_source or ROOT
    describe = ["git", "-C", str(source), "describe", "--always", "--dirty"]
    commit = subprocess.run(describe, capture_output=True, text=True, timeout=30)
    work = Path(tempfile.mkdtemp(prefix="llmtrain-bench-operator-"))
    backend = backend_type(work)
    client = backend.client
    custom = kubernetes.client.CustomObjectsApi(client)
    env = {
        **os.environ,
        **backend.operator_env,
        "LLMTRAIN_NAMESPACES": NS,
        "LLMTRAIN_METRICS_PORT": "0",
        "LLMTRAIN_RESYNC_SECONDS": "600",
        "LLMTRAIN_STATUS_INTERVAL": "10",
    }
    if args.operator_source:
        env["PYTHONPATH"] = f"{source / 'operator'}:{source / 'trainer'}"
    operator_log = (work / "operator.log").open("wb")
    # the operator image installs llmtrain[operator], which has no Kubernetes client library; this venv has
    # one (the tests use it) and kopf imports it when present: keep it out of the process, as in the image
    launch = "import sys; sys.modules['kubernetes'] = None; from llmtrain_operator.__main__ import main; main()"
    operator = subprocess.Popen(
        [sys.executable, "-c", launch, "--liveness", "http://127.0.0.1:0/"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=operator_log,
    )
    documents = list(yaml.safe_load_all((ROOT / "examples" / "run.yaml").read_text()))
    documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "shakespeare/*.txt"}}]
    try:
        # the DataSource, ingested for real
        custom.create_namespaced_custom_object(*GROUP, "datasources", documents[0])

        def ready() -> bool:
            status = custom.get_namespaced_custom_object(*GROUP, "datasources", "shakespeare").get("status") or {}
            return status.get("phase") == "Succeeded"

        backend.ingest(custom, ready)
        if not ready():
            raise SystemExit(f"the DataSource did not become ready on the {backend.name} API server")
        rss_idle = rss_mib(operator.pid)  # started, connected, one DataSource reconciled
        print(f"DataSource ready; applying {args.runs} TrainingRuns", file=sys.stderr)

        # a watch timestamps every trainer Job as it appears
        seen: dict[str, float] = {}
        appeared = threading.Condition()
        batch = kubernetes.client.BatchV1Api(client)
        total = args.samples + args.runs

        def watch() -> None:
            stream = kubernetes.watch.Watch()
            for event in stream.stream(batch.list_namespaced_job, NS, timeout_seconds=900):
                name = event["object"].metadata.name
                if event["type"] == "ADDED" and name.endswith("-train"):
                    with appeared:
                        seen.setdefault(name[: -len("-train")], time.monotonic())
                        appeared.notify_all()
                    if len(seen) >= total:
                        stream.stop()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        time.sleep(0.5)

        def apply(name: str) -> float:
            run = copy.deepcopy(documents[1])
            run["metadata"]["name"] = name
            run["spec"]["suspend"] = True  # a Job without pods: the real Job controller would start them
            custom.create_namespaced_custom_object(*GROUP, "trainingruns", run)
            return time.monotonic()

        # latency: one apply at a time on an otherwise idle operator (what a user sees)
        latencies = []
        for index in range(args.samples):
            name = f"single-{index:03d}"
            applied_at = apply(name)
            with appeared:
                appeared.wait_for(lambda name=name: name in seen, timeout=30)
            latencies.append((seen[name] - applied_at) * 1000)
            time.sleep(0.05)
        latencies.sort()

        # throughput: N runs applied as fast as the client can, all reconciled to their Jobs
        created: dict[str, float] = {}
        start = time.monotonic()
        for index in range(args.runs):
            created[f"run-{index:05d}"] = apply(f"run-{index:05d}")
        applied = time.monotonic() - start
        print(f"applied in {applied:.1f} s", file=sys.stderr)
        watcher.join(600)
        print(f"{len(seen)} Jobs seen", file=sys.stderr)
        burst = [seen[name] for name in created if name in seen]
        all_jobs = max(burst) - start if len(burst) == args.runs else float("nan")
        queued = sorted((seen[name] - created[name]) * 1000 for name in created if name in seen)

        # every run's status written (observedGeneration), then memory
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            items = custom.list_namespaced_custom_object(*GROUP, "trainingruns")["items"]
            done = sum(
                1
                for i in items
                if (i.get("status") or {}).get("observedGeneration") == 1
                and (i.get("status") or {}).get("phase") in ("Pending", "Suspended")
            )
            if done == total:
                break
            time.sleep(1)
        all_status = time.monotonic() - start
        time.sleep(2)
        rss = rss_mib(operator.pid)
        result = {
            "operator_commit": commit.stdout.strip(),
            "runs": args.runs,
            "apply_seconds": round(applied, 2),
            "all_jobs_created_seconds": round(all_jobs, 2),
            "all_statuses_written_seconds": round(all_status, 2),
            "apply_to_job_ms": {
                "p50": round(statistics.median(latencies), 1),
                "p99": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
                "max": round(latencies[-1], 1),
                "samples": len(latencies),
            },
            "apply_to_job_ms_in_burst": {
                "p50": round(statistics.median(queued), 1),
                "p99": round(queued[int(0.99 * (len(queued) - 1))], 1),
            },
            "operator_rss_mib": {"started": round(rss_idle, 1), f"with_{total}_runs": round(rss, 1)},
            **backend.requests(),
        }
        print(json.dumps({backend.name: result}), file=sys.stderr)
        return result
    finally:
        operator.send_signal(signal.SIGINT)
        try:
            operator.wait(30)
        except subprocess.TimeoutExpired:
            operator.kill()
        backend.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

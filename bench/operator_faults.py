"""Operator fault drill: SIGKILL the operator at random points while it reconciles, restart it into an API
server that answers 409s and 500s, slows down, cuts its watch streams and expires their history (410
Gone), and check after every trial that the world converged: no orphans, no replaced Jobs, and nothing
left for the operator's own core to do.

The operator runs as its own process (`python -m llmtrain_operator`, without the Kubernetes client, as in
its image) against the emulated API server (tests/support/kube_api.py) or, with `--api real`, the real one
(tests/support/real_cluster.py) behind a fault-injecting proxy (tests/support/fault_proxy.py: 409s, 500s,
latency, cut watches; the 410 Gone comes from etcd compaction, with the API server's watch cache off so
that re-watching from a compacted revision reaches etcd). One DataSource is ingested for real first (the
local Job executor, or the real Job controller and a node agent, which is then stopped so that the trials'
trainer pods stay Pending as they do on the emulator); each trial then deletes the previous trial's
runs and applies new TrainingRuns and ModelExports, so every kill lands in creates, status writes or
deletions. Converged means: every resource's status has `observedGeneration == generation` and the core
(`llmtrain.core.reconcile`), fed the state the operator would read, plans no action and no status change.

    python bench/operator_faults.py [--trials 50] [--runs 4] [--seed 7] [--api emulated|real] [--out FILE]
                                   [--operator-source DIR]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from llmtrain.control.reconciler import Reconciler, status_patch  # noqa: E402
from llmtrain.core import naming  # noqa: E402
from llmtrain.core.reconcile import reconcile  # noqa: E402
from llmtrain.local.executor import Executor  # noqa: E402
from llmtrain_operator.kubestore import Connection, KubeStore  # noqa: E402
from llmtrain_operator.settings import from_env  # noqa: E402
from support.fault_proxy import FaultProxy  # noqa: E402
from support.kube_api import ServerThread  # noqa: E402
from support.real_cluster import ControlPlane, default_bin_dir, stop_pids  # noqa: E402

NS = "drill"
GROUP = ("llmtrain.dev", "v1alpha1", NS)
KINDS = ("DataSource", "TrainingRun", "ModelExport")
CHILD_KINDS = ("Job", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding")
# as in the operator image: no Kubernetes client library in the process (kopf imports it when present)
LAUNCH = "import sys; sys.modules['kubernetes'] = None; from llmtrain_operator.__main__ import main; main()"


class Drill:
    def __init__(self, work: Path, rng: random.Random) -> None:
        self.work, self.rng = work, rng
        self.api = ServerThread().start()
        config = kubernetes.client.Configuration()
        config.host = self.api.url
        self.custom = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
        self._prepare(KubeStore(self.api.url, component="drill"), operator_api=self.api.url)

    def _prepare(self, store: KubeStore, operator_api: str) -> None:
        """The drill's own client, the operator's environment (its API at `operator_api`), the run file."""
        self.store = store
        self.env = {
            **os.environ,
            "LLMTRAIN_KUBE_API": operator_api,
            "LLMTRAIN_NAMESPACES": NS,
            "LLMTRAIN_METRICS_PORT": "0",
            "LLMTRAIN_RESYNC_SECONDS": "5",
            "LLMTRAIN_STATUS_INTERVAL": "1",
        }
        self.checker = Reconciler(self.store, from_env(self.env).context())
        self.log = (self.work / "operator.log").open("ab")
        self.operator: subprocess.Popen | None = None
        self.documents = list(yaml.safe_load_all((ROOT / "examples" / "run.yaml").read_text()))
        self.documents[0]["spec"]["sources"] = [{"pvc": {"claimName": "corpus", "path": "shakespeare/*.txt"}}]

    # -- the operator process ----------------------------------------------------------------------

    def start(self) -> None:
        self.operator = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "--liveness", "http://127.0.0.1:0/"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def kill(self) -> None:
        if self.operator is not None:
            self.operator.send_signal(signal.SIGKILL)
            self.operator.wait()
            self.operator = None

    # -- the world ---------------------------------------------------------------------------------

    def ingest(self) -> None:
        """The DataSource, ingested for real (the executor plays Job controller and kubelet meanwhile)."""
        shutil.copytree(ROOT / "examples/data/shakespeare", self.work / "volumes" / "corpus" / "shakespeare")
        executor = Executor(KubeStore(self.api.url), self.work, NS, kube_api=self.api.url)
        self.custom.create_namespaced_custom_object(*GROUP, "datasources", self.documents[0])
        self.start()
        deadline = time.monotonic() + 180
        while (self.get("DataSource", "shakespeare").get("status") or {}).get("phase") != "Succeeded":
            if time.monotonic() > deadline:
                raise SystemExit("the DataSource was not ingested")
            executor.sync()
            time.sleep(0.2)
        executor.shutdown()

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.store.get(kind, NS, name) or {}

    def apply(self, trial: int, runs: int) -> list[str]:
        names = []
        for index in range(runs):
            run = copy.deepcopy(self.documents[1])
            run["metadata"]["name"] = name = f"t{trial:03d}-run{index}"
            export = copy.deepcopy(self.documents[2])
            export["metadata"]["name"] = f"{name}-export"
            export["spec"]["trainingRunRef"]["name"] = name
            self.custom.create_namespaced_custom_object(*GROUP, "trainingruns", run)
            self.custom.create_namespaced_custom_object(*GROUP, "modelexports", export)
            names.append(name)
        return names

    def delete(self, names: list[str]) -> None:
        for name in names:
            self.custom.delete_namespaced_custom_object(*GROUP, "modelexports", f"{name}-export")
            self.custom.delete_namespaced_custom_object(*GROUP, "trainingruns", name)

    def unconverged(self) -> list[str]:
        """Resources the operator still has work on (empty: converged)."""
        pending = []
        now = datetime.now(UTC)
        for kind in KINDS:
            for body in self.store.list(kind, NS):
                name = body["metadata"]["name"]
                status = body.get("status") or {}
                if status.get("observedGeneration") != body["metadata"]["generation"]:
                    pending.append(f"{kind}/{name}: not observed")
                    continue
                plan = reconcile(body, self.checker.observe(body), self.checker.ctx, now)
                changes = status_patch(status, plan.status)
                if plan.actions or changes:
                    pending.append(f"{kind}/{name}: {[a.verb for a in plan.actions]} {sorted(changes)}")
        return pending

    def children(self) -> list[dict[str, Any]]:
        managed = {"app.kubernetes.io/managed-by": naming.MANAGED_BY}
        return [child for kind in CHILD_KINDS for child in self.store.list(kind, NS, managed)]

    def orphans(self) -> list[str]:
        owners = {b["metadata"]["uid"] for kind in KINDS for b in self.store.list(kind, NS)}
        return [
            f"{child['kind']}/{child['metadata']['name']}"
            for child in self.children()
            if not any(ref["uid"] in owners for ref in child["metadata"].get("ownerReferences") or [])
        ]

    def settled_orphans(self, seconds: float = 60.0) -> list[str]:
        """Orphans once the garbage collector had its chance: the emulator collects at once, the real
        garbage collector asynchronously (deleted runs' children go within seconds)."""
        deadline = time.monotonic() + seconds
        found = self.orphans()
        while found and time.monotonic() < deadline:
            time.sleep(1.0)
            found = self.orphans()
        return found

    def job_uids(self) -> dict[str, str]:
        return {j["metadata"]["name"]: j["metadata"]["uid"] for j in self.store.list("Job", NS)}

    # -- faults --------------------------------------------------------------------------------------

    def faults(self, conflict: float, error: float, latency: float) -> None:
        faults = self.api.server.faults
        faults.conflict_rate, faults.error_rate, faults.latency = conflict, error, latency

    def cut_watches(self) -> None:
        self.api.call(self.api.server.cut_watches)

    def stop(self) -> None:
        self.api.stop()

    def expire_watches(self) -> None:
        """Cut the watch streams and push their resourceVersion out of the (shrunk) history: 410 Gone."""
        server = self.api.server
        server.history = collections.deque(server.history, maxlen=100)
        self.api.call(server.cut_watches)
        churn = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "churn", "namespace": NS}}
        if self.store.get("ConfigMap", NS, "churn") is None:
            self.store.create({**churn, "data": {"n": "0"}})
        for n in range(150):
            self.store.patch("ConfigMap", NS, "churn", {"data": {"n": str(n)}})


class RealDrill(Drill):
    """The same drill on the real control plane: the operator talks to it through the fault proxy; the
    drill's own checks and writes go straight to the API server."""

    def __init__(self, work: Path, rng: random.Random) -> None:
        self.work, self.rng = work, rng
        self.cp = ControlPlane(default_bin_dir(), work / "cluster", nodes=1, apiserver_args=("--watch-cache=false",))
        self.cp.start()
        self.cp.wait_ready(120)
        pki = self.cp.pki
        self.proxy = FaultProxy(self.cp.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key").start()
        client = kubernetes.config.new_client_from_config(config_file=str(self.cp.kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(client)
        direct = Connection(
            self.cp.server,
            ca_path=str(pki / "ca.crt"),
            cert_path=str(pki / "admin.crt"),
            key_path=str(pki / "admin.key"),
        )
        self._prepare(KubeStore(direct, component="drill"), operator_api=self.proxy.url)
        self.cp.prepare_namespace(NS, claims=("corpus", "llmtrain-storage"))

    def ingest(self) -> None:
        """The real Job controller and the node agent run the ingest; then the node goes (its pods stay Pending)."""
        volume = self.cp.volumes / NS / "corpus"  # made by the provisioner: the claim is Bound
        shutil.copytree(ROOT / "examples/data/shakespeare", volume / "shakespeare")
        self.custom.create_namespaced_custom_object(*GROUP, "datasources", self.documents[0])
        self.start()
        deadline = time.monotonic() + 240
        while (self.get("DataSource", "shakespeare").get("status") or {}).get("phase") != "Succeeded":
            if time.monotonic() > deadline:
                raise SystemExit("the DataSource was not ingested")
            time.sleep(0.5)
        pid = int((self.cp.pids / "node-1.pid").read_text())
        os.kill(pid, signal.SIGTERM)

    def faults(self, conflict: float, error: float, latency: float) -> None:
        faults = self.proxy.faults
        faults.conflict_rate, faults.error_rate, faults.latency = conflict, error, latency

    def cut_watches(self) -> None:
        self.proxy.cut_watches()

    def expire_watches(self) -> None:
        """Churn, compact etcd at its newest revision, cut the watches: re-watching from before is 410 Gone."""
        churn = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "churn", "namespace": NS}}
        if self.store.get("ConfigMap", NS, "churn") is None:
            self.store.create({**churn, "data": {"n": "0"}})
        for n in range(150):
            self.store.patch("ConfigMap", NS, "churn", {"data": {"n": str(n)}})
        self.cp.compact_etcd()
        self.proxy.cut_watches()

    def stop(self) -> None:
        self.proxy.stop()
        stop_pids(self.cp.state_dir)


def trial(drill: Drill, number: int, runs: int, previous: list[str]) -> tuple[dict[str, Any], list[str]]:
    rng = drill.rng
    jobs_before = drill.job_uids()
    drill.start()
    if previous:
        drill.delete(previous)
    names = drill.apply(number, runs)
    delay = rng.uniform(0.0, 2.5)  # the operator needs ~1.5 s to start: some kills land before any reconcile
    time.sleep(delay)
    drill.kill()
    injected = {
        "kill_after_s": round(delay, 2),
        "conflict_rate": rng.choice([0.0, 0.1, 0.2]),
        "error_rate": rng.choice([0.0, 0.05, 0.1]),
        "latency_s": rng.choice([0.0, 0.0, 0.02]),
        "watches": rng.choice(["kept", "cut", "expired (410)"]),
    }
    drill.faults(injected["conflict_rate"], injected["error_rate"], injected["latency_s"])
    drill.start()
    time.sleep(rng.uniform(0.5, 2.0))
    if injected["watches"] == "cut":
        drill.cut_watches()
    elif injected["watches"] == "expired (410)":
        drill.faults(0.0, 0.0, injected["latency_s"])  # the churn itself must get through
        drill.expire_watches()
        drill.faults(injected["conflict_rate"], injected["error_rate"], injected["latency_s"])
    started = time.monotonic()
    pending = drill.unconverged()
    while pending and time.monotonic() - started < 120:
        time.sleep(0.5)
        pending = drill.unconverged()
    seconds = time.monotonic() - started
    drill.faults(0.0, 0.0, 0.0)
    drill.kill()
    jobs_after = drill.job_uids()
    replaced = [n for n, uid in jobs_before.items() if n in jobs_after and jobs_after[n] != uid]
    outcome = {
        **injected,
        "converged": not pending,
        "seconds_to_converge": round(seconds, 1),
        "pending": pending[:5],
        "children": len(drill.children()),
        "orphans": drill.settled_orphans(),
        "jobs_replaced": replaced,
        "deleted_runs_gone": all(not drill.get("TrainingRun", n) for n in previous),
    }
    return outcome, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--runs", type=int, default=4, help="TrainingRuns (each with a ModelExport) per trial")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--api", choices=["emulated", "real"], default="emulated")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--operator-source",
        type=Path,
        help="run the operator from this checkout (`git worktree add DIR COMMIT`): a baseline in the same conditions",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmtrain-operator-drill-"))
    drill = (RealDrill if args.api == "real" else Drill)(work, random.Random(args.seed))
    source = args.operator_source or ROOT
    if args.operator_source:  # the operator process only; the drill and its checks run this checkout
        drill.env["PYTHONPATH"] = f"{source / 'operator'}:{source / 'trainer'}"
    describe = ["git", "-C", str(source), "describe", "--always", "--dirty"]
    commit = subprocess.run(describe, capture_output=True, text=True, timeout=30).stdout.strip()
    outcomes: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        drill.ingest()
        drill.kill()
        previous: list[str] = []
        for number in range(args.trials):
            outcome, previous = trial(drill, number, args.runs, previous)
            outcomes.append(outcome)
            print(json.dumps(outcome), file=sys.stderr, flush=True)
    finally:
        drill.kill()
        drill.stop()
    seconds = [o["seconds_to_converge"] for o in outcomes]
    result = {
        "injected": "SIGKILL of the operator at a random point while it reconciles, then a restart into API"
        " faults (409/500 rates, latency, watches cut or expired with 410 Gone)",
        "api": args.api,
        "operator_commit": commit,
        "trials": args.trials,
        "runs_per_trial": args.runs,
        "converged": sum(o["converged"] for o in outcomes),
        "no_orphans": sum(not o["orphans"] for o in outcomes),
        "children_checked_per_trial": sorted({o["children"] for o in outcomes}),
        "no_job_replaced": sum(not o["jobs_replaced"] for o in outcomes),
        "deletions_completed": sum(o["deleted_runs_gone"] for o in outcomes),
        "seconds_to_converge_max": max(seconds),
        "seconds_to_converge_median": sorted(seconds)[len(seconds) // 2],
        "faults_seen": {
            "409": sum(o["conflict_rate"] > 0 for o in outcomes),
            "500": sum(o["error_rate"] > 0 for o in outcomes),
            "latency": sum(o["latency_s"] > 0 for o in outcomes),
            "watches_cut": sum(o["watches"] == "cut" for o in outcomes),
            "410_gone": sum(o["watches"] == "expired (410)" for o in outcomes),
        },
        "seconds": round(time.monotonic() - started, 1),
        "proxy_injected": getattr(getattr(drill, "proxy", None), "injected", None),
        "outcomes": outcomes,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

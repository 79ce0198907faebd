"""The user's journey on a real control plane, with kubectl and helm as the user has them: the chart
installed, a run file applied (a PVC source, a TrainingRun on two nodes, the example's export to safetensors
and GGUF Q8_0), watched with `kubectl get/wait/describe/logs`; then what only the real thing can show: the
real Job controller retrying a killed trainer that resumes from its checkpoint, the garbage collector
collecting a deleted run's children while its artifacts stay, the API server refusing immutable edits and
every invalid spec of the project's own set (beside `llmtrain validate`'s message), the real authorizer
giving a trainer its own progress ConfigMap and nothing else, and the operator, API server and etcd each
restarted mid-run.

It runs in the e2e mode of the integration harness against the project's own cluster (`make e2e`, or the
cluster tier's `test_real_e2e.py`): LLMTRAIN_E2E_KUBECONFIG, LLMTRAIN_E2E_VOLUMES (team-a's volumes on this
machine) and LLMTRAIN_E2E_STATE (the cluster's state folder: PIDs, to kill and restart its processes).
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from unit.test_invalid_specs import CASES

from llmtrain.local.kubelet import CONTAINER_ENV, marked_processes
from support.cluster import E2E_KUBECONFIG, small_run
from support.paths import ROOT
from support.real_deploy import E2E_VOLUMES, NAMESPACE, RELEASE_NAMESPACE, eventually, tool

E2E_STATE = "LLMTRAIN_E2E_STATE"
pytestmark = [
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        not (os.environ.get(E2E_KUBECONFIG) and os.environ.get(E2E_VOLUMES) and os.environ.get(E2E_STATE)),
        reason="needs the project's real cluster: make e2e (or the cluster tier)",
    ),
]


class Kube:
    """kubectl against the e2e cluster, and the cluster's processes on this machine."""

    def __init__(self) -> None:
        self.kubeconfig = Path(os.environ[E2E_KUBECONFIG])
        self.volumes = Path(os.environ[E2E_VOLUMES])
        self.state = Path(os.environ[E2E_STATE])

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        return tool(self.kubeconfig, "kubectl", *args, stdin=stdin, timeout=timeout)

    def attempt(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """kubectl, its failure returned (a --kubeconfig among `args` replaces the admin's)."""
        config = [] if any(a.startswith("--kubeconfig=") for a in args) else [f"--kubeconfig={self.kubeconfig}"]
        return subprocess.run(
            [str(ROOT / ".tools" / "bin" / "kubectl"), *config, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def get(self, kind: str, name: str | None = None, namespace: str = NAMESPACE, selector: str = "") -> Any:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        args += [name] if name else []
        args += ["-l", selector] if selector else []
        return json.loads(self(*args))

    def status(self, kind: str, name: str) -> dict[str, Any]:
        found = self.attempt("get", kind, name, "-n", NAMESPACE, "-o", "json")
        return json.loads(found.stdout).get("status") or {} if found.returncode == 0 else {}

    def apply(self, documents: list[dict[str, Any]]) -> str:
        return self("apply", "-n", NAMESPACE, "-f", "-", stdin=yaml.safe_dump_all(documents))

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return self.get("pods", selector=selector)["items"]


def wait_phase(kube: Kube, kind: str, name: str, phase: str, timeout: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = kube.status(kind, name)
        if status.get("phase") == "Failed" and phase != "Failed":
            raise AssertionError(f"{kind}/{name} failed: {status.get('message')}")
        return status if status.get("phase") == phase else None

    return eventually(f"{kind}/{name} {phase}", reached, timeout)


def journey_run(name: str, nodes: int, steps: int, workers: int = 1) -> list[dict[str, Any]]:
    """The example run file shrunk to seconds (small_run), renamed, on `nodes` nodes, exporting as the
    example writes it (safetensors and GGUF Q8_0, validated); `workers` > 1 ingests in stages."""
    example = list(yaml.safe_load_all((ROOT / "examples" / "run.yaml").read_text()))
    documents = small_run(steps=steps, workers=workers)
    documents[2]["spec"] = {**copy.deepcopy(example[2]["spec"]), "output": documents[2]["spec"]["output"]}
    data, run, export = (d["metadata"] for d in documents)
    data["name"], run["name"], export["name"] = f"{name}-data", name, f"{name}-export"
    documents[1]["spec"]["dataSourceRef"]["name"] = data["name"]
    documents[2]["spec"]["trainingRunRef"]["name"] = name
    documents[1]["spec"]["resources"].update(nodes=nodes, cpu="2", memory="4Gi")
    return documents


def container_process(kube: Kube, pod: dict[str, Any]) -> int:
    """The pod's container process on this machine (the node agent marks each pod's processes)."""
    marked = set(marked_processes(f"{CONTAINER_ENV}={pod['metadata']['uid']}".encode()))
    for pid in sorted(marked):
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if parent not in marked:
            return pid
    raise AssertionError(f"no process of pod {pod['metadata']['name']} on this machine")


@pytest.fixture(scope="module")
def kube() -> Iterator[Kube]:
    kube = Kube()
    yield kube
    for name in ("journey", "gpus", "retry", "restarts"):  # so that `make e2e` runs again on the same cluster
        kube.attempt("delete", "modelexport,trainingrun", name, f"{name}-export", "-n", NAMESPACE, "--ignore-not-found")
        kube.attempt("delete", "datasource", f"{name}-data", "-n", NAMESPACE, "--ignore-not-found")


def test_the_chart_runs_the_operator_under_its_own_rbac(kube):
    (pod,) = kube.get("pods", namespace=RELEASE_NAMESPACE)["items"]
    assert pod["status"]["phase"] == "Running" and pod["spec"]["serviceAccountName"] == "llmtrain-operator"
    account = "system:serviceaccount:llmtrain-system:llmtrain-operator"
    assert kube("auth", "can-i", "create", "jobs", "-n", NAMESPACE, f"--as={account}").strip() == "yes"
    refused = kube.attempt("auth", "can-i", "create", "jobs", "-n", "default", f"--as={account}")
    assert refused.stdout.strip() == "no"  # watchNamespaces: [team-a] gives a Role there and nothing more


def test_journey(kube):
    documents = journey_run("journey", nodes=2, steps=40, workers=2)  # the DataSource in stages, a Job each
    applied = kube.apply(documents)
    assert "trainingrun.llmtrain.dev/journey created" in applied, applied

    def progress_row() -> str | None:
        table = kube("get", "trainingruns", "-n", NAMESPACE)
        row = next((line for line in table.splitlines() if line.startswith("journey ")), "")
        return table if re.search(r"\bRunning\s+\d+/40\s+\d+\.\d+", row) else None

    table = eventually("kubectl get trainingruns shows step and loss while it runs", progress_row, 600)
    print(table)
    waited = kube(
        "wait",
        "--for=condition=Succeeded",
        "modelexport/journey-export",
        "-n",
        NAMESPACE,
        "--timeout=600s",
        timeout=620,
    )
    assert "condition met" in waited
    run = kube.status("trainingruns", "journey")
    assert run["phase"] == "Succeeded" and run["progress"] == "40/40", run
    for stage, tasks in (("ingest", 2), ("dedup", 2), ("cluster", 1), ("tokenizer", 1), ("encode", 2), ("manifest", 1)):
        job = kube.get("jobs", f"journey-data-{stage}")  # the real Job controller ran every ingest stage
        assert job["status"]["succeeded"] == tasks, (stage, job["status"])
    data_events = kube("get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.name=journey-data")
    assert all(f"{s}Started" in data_events for s in ("Scan", "Dedup", "Encode", "Manifest")), data_events
    trainers = kube.pods("job-name=journey-train")
    assert len(trainers) == 2 and {p["status"]["phase"] for p in trainers} == {"Succeeded"}
    assert len({p["spec"]["nodeName"] for p in trainers}) == 2, "the two trainer pods share a node"
    export = kube.status("modelexports", "journey-export")
    artifacts = {a["format"]: a for a in export["artifacts"]}
    assert set(artifacts) == {"safetensors", "gguf"}, export
    assert all(a["validation"]["passed"] for a in artifacts.values()), export
    described = kube("describe", "trainingrun", "journey", "-n", NAMESPACE)
    events = described.split("Events:", 1)[1]
    assert "<none>" not in events.splitlines()[0] and "Normal" in events, described[-2000:]
    (rank0,) = [p for p in trainers if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0"]
    logs = kube("logs", "-n", NAMESPACE, rank0["metadata"]["name"])
    assert '"step"' in logs and "loss" in logs, logs[-2000:]


def test_a_gpu_request_no_node_can_hold_is_reported_in_the_schedulers_words(kube):
    """Each node has 2 nvidia.com/gpu: a run asking 4 per node stays Pending, and its status says why (the real
    scheduler's message) and what to do."""
    capacity = {
        n["metadata"]["name"]: n["status"]["capacity"].get("nvidia.com/gpu") for n in kube.get("nodes")["items"]
    }
    assert set(capacity.values()) == {"2"}, capacity
    run = journey_run("gpus", nodes=1, steps=10)[1]
    run["spec"]["dataSourceRef"]["name"] = "journey-data"
    run["spec"]["resources"]["gpusPerNode"] = 4
    kube.apply([run])

    def reported() -> str | None:
        message = kube.status("trainingruns", "gpus").get("message", "")
        return message if "Insufficient nvidia.com/gpu" in message else None

    message = eventually("the scheduler's verdict in the run's status", reported, 120)
    assert "cannot be scheduled" in message and "lower gpusPerNode or add nodes" in message, message
    (pod,) = kube.pods("job-name=gpus-train")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    kube("delete", "trainingrun", "gpus", "-n", NAMESPACE, "--wait=true", timeout=120)


def test_killed_trainer_is_retried_by_the_job_controller_and_resumes(kube):
    kube.apply(journey_run("retry", nodes=1, steps=40)[:2])
    eventually("a checkpoint", lambda: kube.status("trainingruns", "retry").get("latestCheckpoint"), 600)
    job_uid = kube.get("jobs", "retry-train")["metadata"]["uid"]
    (pod,) = [p for p in kube.pods("job-name=retry-train") if p["status"]["phase"] == "Running"]
    os.kill(container_process(kube, pod), signal.SIGKILL)  # the trainer dies mid-run
    run = wait_phase(kube, "trainingruns", "retry", "Succeeded", 600)
    assert run["restarts"] == 1 and run["lastFailure"]["exitCode"] == 137 and run["progress"] == "40/40", run
    job = kube.get("jobs", "retry-train")
    assert job["metadata"]["uid"] == job_uid and job["status"]["failed"] == 1  # the real Job controller retried
    pods = kube.pods("job-name=retry-train")
    assert len(pods) == 2
    replacement = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
    assert '"Resumed"' in kube("logs", "-n", NAMESPACE, replacement["metadata"]["name"])


def test_a_trainer_writes_its_own_progress_and_nothing_else(kube, tmp_path):
    """The real authorizer: a trainer's token may patch its own run's progress ConfigMap, not another's."""
    account = kube.get("jobs", "retry-train")["spec"]["template"]["spec"]["serviceAccountName"]
    token = kube("create", "token", account, "-n", NAMESPACE).strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    config["users"] = [{"name": config["users"][0]["name"], "user": {"token": token}}]  # no client certificate
    (tmp_path / "trainer.kubeconfig").write_text(yaml.safe_dump(config))
    trainer = f"--kubeconfig={tmp_path / 'trainer.kubeconfig'}"
    patch = json.dumps({"metadata": {"annotations": {"llmtrain.dev/test": "1"}}})
    own = kube.attempt(trainer, "patch", "configmap", "retry-progress", "-n", NAMESPACE, "-p", patch)
    assert own.returncode == 0, own.stderr
    other = kube.attempt(trainer, "patch", "configmap", "journey-progress", "-n", NAMESPACE, "-p", patch)
    assert other.returncode != 0 and "Forbidden" in other.stderr, other.stderr
    user = f'User "system:serviceaccount:{NAMESPACE}:{account}" cannot'  # get (kubectl reads before it patches)
    assert 'configmaps "journey-progress" is forbidden' in other.stderr and user in other.stderr, other.stderr


def test_deleted_run_children_are_collected_and_artifacts_stay(kube):
    run = kube.status("trainingruns", "retry")
    kube("delete", "trainingrun", "retry", "-n", NAMESPACE, "--wait=true", timeout=120)

    def children() -> list[str]:
        out = []
        for kind in ("jobs", "pods", "services", "serviceaccounts", "roles", "rolebindings", "configmaps"):
            names = [o["metadata"]["name"] for o in kube.get(kind)["items"]]
            out += [f"{kind}/{n}" for n in names if n.startswith("retry-") and not n.startswith("retry-data")]
        return out

    eventually("the garbage collector removes the run's children", lambda: not children(), 120)
    checkpoint = kube.volumes / run["latestCheckpoint"]["uri"][len("pvc://") :]
    assert checkpoint.is_dir() and (checkpoint.parent / "latest").is_file()


def test_immutable_edit_is_refused(kube):
    refused = kube.attempt(
        "patch", "trainingrun", "journey", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"model":{"layers":8}}}'
    )
    assert refused.returncode != 0 and "spec.model is immutable" in refused.stderr, refused.stderr


def validate_message(obj: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / f"{obj['kind']}.yaml"
    path.write_text(yaml.safe_dump(obj))
    proc = subprocess.run(
        [sys.executable, "-m", "llmtrain.cli", "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_every_invalid_spec_is_refused_by_the_real_api_server(kube, valid, tmp_path):
    """Each case of tests/unit/test_invalid_specs.py, server-side dry run: refused, naming the field that
    `llmtrain validate` names; where the rule is CEL, in the same words."""
    report = []
    for case, kind, mutate, path, message in CASES:
        obj = copy.deepcopy(valid[kind])
        mutate(obj)
        obj["metadata"]["namespace"] = NAMESPACE
        server = kube.attempt("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(obj))
        ours = validate_message(obj, tmp_path)
        assert server.returncode != 0, f"{case}: the API server accepted it"
        assert path in ours and message in ours, f"{case}: llmtrain validate said {ours}"
        field = path.split("[")[0].split(".")[-1] if path != "metadata.name" else "metadata.name"
        assert field in server.stderr or path.rsplit(".", 1)[0] in server.stderr, f"{case}: {server.stderr}"
        report.append((case, message in server.stderr, server.stderr.strip().splitlines()[-1][:200]))
    same_words = [case for case, same, _ in report if same]
    print(json.dumps(report, indent=1))
    assert same_words, "no CEL message was the same on both sides"


def test_operator_api_server_and_etcd_restarted_mid_run_converge(kube):
    from support.real_cluster import restart

    kube.apply(journey_run("restarts", nodes=1, steps=60)[:2])
    eventually("training", lambda: kube.status("trainingruns", "restarts").get("phase") == "Running", 600)
    (operator,) = kube.get("pods", namespace=RELEASE_NAMESPACE)["items"]
    os.kill(container_process(kube, operator), signal.SIGKILL)  # the kubelet restarts it (restartPolicy Always)
    restart(kube.state, "kube-apiserver")
    eventually("the API server back", lambda: kube.attempt("get", "--raw=/readyz").returncode == 0, 60)
    restart(kube.state, "etcd")
    eventually("etcd back", lambda: kube.attempt("get", "--raw=/readyz").returncode == 0, 60)
    run = wait_phase(kube, "trainingruns", "restarts", "Succeeded", 300)
    assert run["progress"] == "60/60"
    (operator,) = kube.get("pods", namespace=RELEASE_NAMESPACE)["items"]
    assert operator["status"]["containerStatuses"][0]["restartCount"] >= 1
    assert [
        j["metadata"]["name"] for j in kube.get("jobs")["items"] if j["metadata"]["name"].startswith("restarts")
    ] == [
        "restarts-data-ingest",
        "restarts-train",
    ]
    assert len([s for s in kube.get("services")["items"] if s["metadata"]["name"].startswith("restarts")]) == 1

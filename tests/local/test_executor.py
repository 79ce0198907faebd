"""The Job executor behaves as the Job controller and kubelet do, on tiny shell pods (seconds)."""

from __future__ import annotations

import sys
import time

import pytest

from llmtrain.core.children import failure_policy
from llmtrain.local.executor import Executor, expand
from llmtrain.local.filestore import FileStore

PY = sys.executable
INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def job(name, script, completions=1, backoff=1, **spec):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app.kubernetes.io/managed-by": "llmtrain-operator"},
        },
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "completionMode": "Indexed",
            "backoffLimit": backoff,
            "podFailurePolicy": failure_policy("main"),
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "main",
                            "image": "x",
                            "command": [PY, "-c", script],
                            "args": ["$(JOB_COMPLETION_INDEX)"],
                            "env": [
                                {
                                    "name": "JOB_COMPLETION_INDEX",
                                    "valueFrom": {"fieldRef": {"fieldPath": INDEX_FIELD}},
                                },
                                {"name": "LLMTRAIN_TERMINATION_LOG", "value": "/dev/termination-log"},
                            ],
                            "terminationMessagePath": "/dev/termination-log",
                        }
                    ],
                }
            },
            **spec,
        },
    }


def run_until(store, executor, name, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.sync()
        found = store.get("Job", "default", name)
        for cond in (found.get("status") or {}).get("conditions") or []:
            if cond["type"] == condition and cond["status"] == "True":
                return found
        time.sleep(0.1)
    raise AssertionError(f"Job {name} never became {condition}: {found.get('status')}")


@pytest.fixture
def world(tmp_path):
    store = FileStore(tmp_path)
    executor = Executor(store, tmp_path)
    yield store, executor
    executor.shutdown(wait=True)


WRITE_REPORT = (
    "import json, os, sys; open(os.environ['LLMTRAIN_TERMINATION_LOG'], 'w').write(json.dumps({'index': sys.argv[1]}))"
)


def test_indexed_pods_get_their_index_and_report(world):
    store, executor = world
    store.create(job("parts", WRITE_REPORT, completions=3))
    done = run_until(store, executor, "parts", "Complete")
    assert done["status"]["succeeded"] == 3 and done["status"]["completedIndexes"] == "0,1,2"
    pods = store.list("Pod", "default", {"batch.kubernetes.io/job-name": "parts"})
    messages = sorted(p["status"]["containerStatuses"][0]["state"]["terminated"]["message"] for p in pods)
    assert messages == ['{"index": "0"}', '{"index": "1"}', '{"index": "2"}']


def test_fail_job_exit_code_fails_at_once(world):
    store, executor = world
    store.create(job("bad", "import sys; sys.exit(2)", backoff=5))
    failed = run_until(store, executor, "bad", "Failed")
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "PodFailurePolicy" and "exit code 2" in cond["message"]
    assert len(store.list("Pod", "default", {"batch.kubernetes.io/job-name": "bad"})) == 1  # no retry


def test_retryable_failures_count_against_backoff_limit(world):
    store, executor = world
    store.create(job("flaky", "import sys; sys.exit(75)", backoff=2))
    failed = run_until(store, executor, "flaky", "Failed")
    assert next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["reason"] == "BackoffLimitExceeded"
    assert failed["status"]["failed"] == 3


def test_suspend_stops_pods_as_disruptions_and_resume_reruns(world):
    store, executor = world
    store.create(job("sleepy", "import time; time.sleep(60)"))
    executor.sync()
    assert executor.running() == 1
    store.patch("Job", "default", "sleepy", {"spec": {"suspend": True}})
    deadline = time.monotonic() + 10
    while executor.running() and time.monotonic() < deadline:
        executor.sync()
        time.sleep(0.1)
    pod = store.list("Pod", "default", {"batch.kubernetes.io/job-name": "sleepy"})[0]
    assert pod["status"]["phase"] == "Failed"
    assert {"DisruptionTarget"} <= {c["type"] for c in pod["status"]["conditions"]}
    assert store.get("Job", "default", "sleepy")["status"]["failed"] == 0  # Ignore rule: not counted
    store.patch("Job", "default", "sleepy", {"spec": {"suspend": False}})
    executor.sync()
    assert executor.running() == 1


def test_deleting_a_job_stops_its_pods(world):
    store, executor = world
    store.create(job("gone", "import time; time.sleep(60)"))
    executor.sync()
    store.delete("Job", "default", "gone")
    assert store.list("Pod", "default") == []  # garbage-collected with their owner
    executor.sync()
    deadline = time.monotonic() + 10
    while executor.running() and time.monotonic() < deadline:
        executor.sync()
        time.sleep(0.1)
    assert executor.running() == 0


def test_expansion_keeps_unknown_variables():
    assert expand("--rank=$(RANK) $(NOPE)", {"RANK": "3"}) == "--rank=3 $(NOPE)"


def test_a_dead_pod_leaves_no_process_behind_even_in_another_session(world, tmp_path):
    """A container's processes die with it (the runtime kills its cgroup): a child the main process started
    in a session of its own, as torchrun starts its workers, must not outlive the pod and work on beside
    its replacement."""
    store, executor = world
    pid_file = tmp_path / "orphan.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "sys.exit(0)"
    )
    store.create(job("orphans", script))
    run_until(store, executor, "orphans", "Complete")
    orphan = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(orphan), "the pod's child in its own session survived the pod"


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

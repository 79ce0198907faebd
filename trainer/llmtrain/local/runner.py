"""`llmtrain run`: apply a run file to a work directory and drive it to the end, on this machine.

The same reconcile core as the operator produces the same Job manifests; the executor runs their pods
as processes. Ctrl-C (or SIGTERM) stops the pods as a node drain would: SIGTERM, the trainer saves a
checkpoint and exits 75; a rerun of the same command resumes from it.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from ..api import SpecError
from ..api.manifests import parse_resources, read_documents
from ..control import Reconciler
from ..core import Context
from ..core.reconcile import TERMINAL
from ..errors import BadInput
from . import table
from .executor import Executor
from .filestore import FileStore

NAMESPACE = "default"
#: Waiting reasons that nothing on this machine will change: the dependency failed.
BLOCKED = ("TrainingRunFailed", "DataSourceFailed")


def apply(
    store: FileStore, documents: list[dict[str, Any]], source: str, namespace: str = NAMESPACE
) -> list[tuple[str, str]]:
    """`kubectl apply` for a run file's documents (`read_documents`): Secrets and llmtrain resources."""
    resources = parse_resources(documents, source)  # SpecError names every bad field of every document
    secrets = [d for d in documents if d.get("kind") == "Secret" and d.get("apiVersion") == "v1"]
    applied = []
    for document in secrets + [r.to_wire() for r in resources]:
        document = {k: v for k, v in document.items() if k != "status"}
        document["metadata"] = {**document["metadata"], "namespace": namespace}
        current = store.get(document["kind"], namespace, document["metadata"]["name"])
        if current is None:
            store.create(document)
        else:
            if document["kind"] == "TrainingRun":
                _check_immutable(current, document)
            store.update(
                {
                    **current,
                    **{k: v for k, v in document.items() if k != "metadata"},
                    "metadata": {**current["metadata"], **document["metadata"]},
                }
            )
        if document["kind"] != "Secret":
            applied.append((document["kind"], document["metadata"]["name"]))
    return applied


def _check_immutable(current: dict[str, Any], new: dict[str, Any]) -> None:
    for field in ("model", "dataSourceRef", "data"):
        if current["spec"].get(field) != new["spec"].get(field):
            raise SpecError(
                [],
                f"TrainingRun {new['metadata']['name']}: spec.{field} is immutable: create a new"
                " TrainingRun (another name) to change it, or use another --workdir",
            )


class Console:
    """Events as log lines, and a live table at the bottom when the output is a terminal."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out, self.live, self._footer = out, live, 0

    def show(self, events: list[str], footer: list[str]) -> None:
        if self.live and self._footer:
            self.out.write(f"\x1b[{self._footer}F\x1b[J")
        for line in events:
            self.out.write(line + "\n")
        if self.live:
            self.out.write("\n".join(footer) + "\n")
            self._footer = len(footer)
        self.out.flush()


def status_lines(store: FileStore, applied: list[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for kind in table.KINDS:
        objects = [o for o in (store.get(k, NAMESPACE, n) for k, n in applied if k == kind.KIND) if o]
        if objects:
            lines += [*table.render(table.rows(kind, objects)).splitlines(), ""]
    for kind, name in applied:
        obj = store.get(kind, NAMESPACE, name) or {}
        status = obj.get("status") or {}
        if kind == "TrainingRun" and status.get("phase") == "Running" and status.get("totalSteps"):
            done = (status.get("step") or 0) / status["totalSteps"]
            bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
            lines.append(
                f"{name} [{bar}] {status.get('progress')} loss {status.get('loss', '-')} eta {status.get('eta', '-')}"
            )
    return lines


def run(path: str, workdir: Path, out: TextIO = sys.stdout, poll: float = 0.5) -> int:
    """Run every resource in the file to completion; returns 0 when all succeeded."""
    documents = read_documents(path)  # once: `-` is stdin, which a second read finds empty
    workdir = Path(workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
        raise BadInput(f"{workdir}: not a directory; --workdir names the run's work directory")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    store = FileStore(workdir)
    applied = apply(store, documents, "<stdin>" if path == "-" else path)
    base_dir = Path.cwd() if path == "-" else Path(path).resolve().parent
    ctx = Context(local=True, base_dir=str(base_dir), storage_root=str(workdir / "storage"), status_interval=1.0)
    reconciler = Reconciler(store, ctx)
    executor = Executor(store, workdir, NAMESPACE)
    console = Console(out, out.isatty())
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    seen = len(store.events)
    out.write(f"llmtrain run: {len(applied)} resources, work directory {workdir}\n")
    try:
        while not stop.is_set():
            for kind, name in applied:
                reconciler.reconcile(kind, NAMESPACE, name)
            executor.sync()
            events = [
                f"{e['time'][11:19]} {e['type']:<7} {e['object']:<32} {e['reason']}: {e['message']}"
                for e in store.events[seen:]
            ]
            seen = len(store.events)
            console.show(events, status_lines(store, applied))
            if _finished(store, applied) and not executor.running():
                break
            stop.wait(poll)
        if stop.is_set():
            out.write("stopping: pods get SIGTERM and save a checkpoint; rerun the same command to resume\n")
            executor.shutdown("Interrupted")
            for kind, name in applied:
                reconciler.reconcile(kind, NAMESPACE, name, force_status=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.live = False
    console.show([], [])
    out.write(table_text(store, None, wide=False) + "\n")
    failed = [
        (k, n)
        for k, n in applied
        if ((store.get(k, NAMESPACE, n) or {}).get("status") or {}).get("phase") != "Succeeded"
    ]
    for kind, name in failed:
        _explain(store, out, kind, name, workdir)
    if stop.is_set():
        return 130
    return 1 if failed else 0


def _finished(store: FileStore, applied: list[tuple[str, str]]) -> bool:
    for kind, name in applied:
        obj = store.get(kind, NAMESPACE, name) or {}
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"].get("generation"):
            return False
        blocked = status.get("phase") == "Pending" and any(
            c.get("reason") in BLOCKED for c in status.get("conditions") or []
        )
        if status.get("phase") not in TERMINAL and not blocked:
            return False
    return True


def _explain(store: FileStore, out: TextIO, kind: str, name: str, workdir: Path) -> None:
    status = (store.get(kind, NAMESPACE, name) or {}).get("status") or {}
    failure = status.get("failure") or {}
    out.write(f"\n{kind}/{name}: {status.get('phase')}: {status.get('message')}\n")
    pod = failure.get("pod")
    if pod:
        log = workdir / "pods" / NAMESPACE / pod / "log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-15:]
            out.write(f"last lines of {log}:\n" + "\n".join("  " + line for line in tail) + "\n")


def table_text(store: FileStore, kinds: list[type] | None, wide: bool, names: list[str] | None = None) -> str:
    parts = []
    for kind in kinds or list(table.KINDS):
        objects = store.list(kind.KIND, None)
        if names:
            objects = [o for o in objects if o["metadata"]["name"] in names]
        if objects:
            parts.append(table.render(table.rows(kind, objects, wide)))
    return "\n\n".join(parts) if parts else "No resources found."

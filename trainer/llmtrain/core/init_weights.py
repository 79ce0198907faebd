"""Where a TrainingRun's starting weights come from (`spec.init`): the URI its trainer loads and, for
another run's checkpoints, which one, once that source is there. The trainer tells a Hugging Face
directory from an llmtrain checkpoint (or a checkpoint root) by itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import ModelExport, TrainingRun
from . import checkpoints, parsed, uris
from .context import Context
from .plan import ChildKey, Observed
from .status import StatusBuilder

CONDITION = "InitReady"
WAITING = "WaitingForInit"
#: The export artifact a run starts from: full-precision safetensors (the Hugging Face layout).
WEIGHTS_ARTIFACT = ("safetensors", "none")


@dataclass(frozen=True)
class Start:
    """The weights a run starts from: their URI and, for a TrainingRun's checkpoints, which one."""

    uri: str
    select: checkpoints.Select | None = None
    step: int | None = None

    def args(self) -> list[str]:
        """The trainer's flags: `--init URI [--init-select latest|best|step [--init-step N]]`."""
        out = ["--init", self.uri]
        if self.select is not None:
            out += ["--init-select", self.select]
        if self.step is not None:
            out += ["--init-step", str(self.step)]
        return out


#: Not there yet: (reason, message) for the status.
Wait = tuple[str, str]


def dependency_keys(spec: dict[str, Any]) -> list[ChildKey]:
    """The TrainingRun or ModelExport a run's `spec.init` names, if any."""
    init = spec.get("init") or {}
    refs = ((TrainingRun.KIND, init.get("trainingRunRef")), (ModelExport.KIND, init.get("modelExportRef")))
    return [(kind, ref["name"]) for kind, ref in refs if isinstance(ref, dict) and ref.get("name")]


def check(run: TrainingRun, ctx: Context) -> None:
    """What needs nothing but the spec, so that it fails at once: `from` usable here, no run starting
    from itself."""
    init = run.spec.init
    if init is None:
        return
    uris.init_from_uri(run, ctx)
    if init.training_run_ref is not None and init.training_run_ref.name == run.name:
        raise uris.PlacementError(
            "spec.init.trainingRunRef", "a run cannot start from itself (it resumes from its own checkpoints anyway)"
        )


def resolve(
    run: TrainingRun, namespace: str, observed: Observed, ctx: Context, status: StatusBuilder, started: bool
) -> Start | None:
    """The run's starting weights once they are there; None while it waits, the status saying for what
    (reason WaitingForInit, InitRunFailed or InitExportFailed; condition InitReady mirrors it). Once the
    run `started`, its trainer has loaded them (or resumes from its own checkpoints): it needs their URI,
    not their source's readiness, so a source that runs again does not turn it back to Pending."""
    init = run.spec.init
    assert init is not None, "only called for a run with spec.init"
    if init.training_run_ref is not None:
        checkpoint = (init.checkpoint or "latest", init.step)
        start, wait = _from_run(init.training_run_ref.name, checkpoint, namespace, observed, ctx, started)
    elif init.model_export_ref is not None:
        start, wait = _from_export(init.model_export_ref.name, observed, started)
    else:
        start, wait = Start(uris.init_from_uri(run, ctx) or ""), None
    if start is not None:
        status.condition(CONDITION, True, "InitReady", start.uri)
        return start
    reason, message = wait or (WAITING, "")
    status.waiting_for(reason, message)
    status.condition(CONDITION, False, reason, message)
    return None


def _from_run(
    name: str,
    checkpoint: tuple[checkpoints.Select, int | None],
    namespace: str,
    observed: Observed,
    ctx: Context,
    started: bool,
) -> tuple[Start | None, Wait | None]:
    """The checkpoint root of TrainingRun `name`, once the checkpoint (which, its step) is there."""
    select, step = checkpoint
    found = observed.dependencies.get((TrainingRun.KIND, name))
    waiting = checkpoints.wait(found, name, select, step)
    if waiting is None or (started and waiting.state != "missing"):
        source = parsed.model(TrainingRun, found)
        return Start(uris.checkpoints_uri(source, namespace, ctx), select, step), None
    if waiting.state == "failed":
        advice = "start from one of its checkpoints with checkpoint: step"
        return None, ("InitRunFailed", f"spec.init: {waiting.message}; {advice}")
    return None, (WAITING, f"spec.init: {waiting.message}")


def _from_export(name: str, observed: Observed, started: bool) -> tuple[Start | None, Wait | None]:
    """The safetensors artifact of the ModelExport `modelExportRef`, once the export succeeded."""
    found = observed.dependencies.get((ModelExport.KIND, name))
    if found is None:
        return None, (WAITING, f"spec.init: ModelExport {name} does not exist yet")
    export_status = found.get("status") or {}
    phase, uri = export_status.get("phase"), weights_uri(export_status)
    if uri is not None and (phase == "Succeeded" or started):
        return Start(uri), None
    if phase == "Failed":
        return None, ("InitExportFailed", f"spec.init: ModelExport {name} failed: {export_status.get('message', '')}")
    if phase == "Succeeded":
        return None, (
            WAITING,
            f"spec.init: ModelExport {name} wrote no safetensors artifact without quantization:"
            " add safetensors to its formats",
        )
    return None, (WAITING, f"spec.init: waiting for ModelExport {name} to succeed ({phase or 'new'})")


def weights_uri(export_status: dict[str, Any]) -> str | None:
    """Where an export's full-precision safetensors artifact (a Hugging Face directory) is, if it has one."""
    for artifact in export_status.get("artifacts") or []:
        if (artifact.get("format"), artifact.get("quantization")) == WEIGHTS_ARTIFACT and artifact.get("uri"):
            return str(artifact["uri"])
    return None

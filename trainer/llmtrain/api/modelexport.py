"""ModelExport: a checkpoint exported to deployable formats and proven in their runtimes."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from annotated_types import Ge, Gt, Le, MaxLen, MinLen
from pydantic import Field

from .base import ApiModel, CelRule, ListType
from .common import (
    POD_CONTROLS,
    QUEUE_NAME,
    QUEUE_PRIORITY_RULE,
    WORKLOAD_PRIORITY,
    Conditions,
    Failure,
    Image,
    LocalObjectReference,
    ObjectName,
    PlacedPodResources,
    PodControls,
    StorageUri,
    Timestamp,
)
from .resource import AGE, PrinterColumn, Resource

Format = Literal["safetensors", "onnx", "gguf", "torchscript"]
Quantization = Literal["none", "int8", "int4", "q8_0", "q4_0"]

#: Which formats can hold each quantization; a quantized artifact is written for each of them
#: (beside the full-precision one, which validation compares against).
QUANTIZED_FORMATS: dict[str, tuple[str, ...]] = {
    "none": (),
    "int8": ("onnx", "gguf"),  # ONNX dynamic INT8; GGUF Q8_0
    "int4": ("gguf",),  # GGUF Q4_0
    "q8_0": ("gguf",),
    "q4_0": ("gguf",),
}


def _quantization_rule(quantization: str, formats: tuple[str, ...]) -> CelRule:
    allowed = " or ".join(formats)
    needs = " || ".join(f"'{f}' in self.formats" for f in formats)
    return CelRule(
        f"self.quantization != '{quantization}' || {needs}",
        f"quantization {quantization} needs format {allowed} in formats",
        ".quantization",
    )


class ExportOutputSpec(ApiModel):
    """Where the artifacts and export report are written."""

    uri: StorageUri | None = Field(
        default=None,
        description="s3://, pvc:// or (local runner) a path; default: the operator's default storage"
        " under <namespace>/modelexports/<name>/.",
    )


class ExportValidationSpec(ApiModel):
    """The deployment check run on every artifact in its real runtime."""

    max_perplexity_increase: Annotated[float, Ge(0.0), Le(10.0)] = Field(
        default=0.1,
        description="Largest relative validation-perplexity increase of a quantized artifact over full precision"
        " (0.1 = 10%); the export fails above it.",
    )
    greedy_tokens: Annotated[int, Ge(0), Le(4096)] = Field(
        default=32, description="Greedy tokens that each full-precision artifact must reproduce exactly."
    )
    max_relative_error: Annotated[float, Gt(0.0), Le(1.0)] = Field(
        default=1e-3, description="Largest relative logit error of a full-precision artifact vs the training model."
    )


class ModelExportSpec(ApiModel):
    """Which checkpoint to export, to which formats, and how to check the result."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            "has(self.trainingRunRef) != has(self.checkpointUri)",
            "set exactly one of trainingRunRef and checkpointUri",
        ),
        CelRule(
            "!has(self.checkpointUri) || has(self.dataSourceRef)",
            "must be set with checkpointUri: it names the tokenizer and validation data",
            ".dataSourceRef",
        ),
        CelRule("self.checkpoint != 'step' || has(self.step)", "must be set when checkpoint is step", ".step"),
        CelRule("self.checkpoint == 'step' || !has(self.step)", "is only used when checkpoint is step", ".step"),
        *(_quantization_rule(q, f) for q, f in QUANTIZED_FORMATS.items() if f),
        QUEUE_PRIORITY_RULE,
    )

    training_run_ref: LocalObjectReference | None = Field(
        default=None, description="The TrainingRun whose checkpoints to export (waits for them)."
    )
    checkpoint_uri: StorageUri | None = Field(
        default=None, description="A checkpoint directory, or a run's checkpoint root, instead of trainingRunRef."
    )
    checkpoint: Literal["latest", "best", "step"] = Field(
        default="latest", description="Which checkpoint: latest, best (lowest val loss) or a given step."
    )
    step: Annotated[int, Ge(0)] | None = Field(default=None, description="The step, when checkpoint is step.")
    data_source_ref: LocalObjectReference | None = Field(
        default=None,
        description="DataSource for the tokenizer and validation shards; the TrainingRun's when unset.",
    )
    formats: Annotated[list[Format], MinLen(1), MaxLen(4), ListType("set")] = Field(
        description="Formats to write: safetensors (Hugging Face layout), onnx, gguf, torchscript."
    )
    quantization: Quantization = Field(
        default="none",
        description="none; int8 (ONNX dynamic INT8 and GGUF Q8_0); int4 (GGUF Q4_0); q8_0 or q4_0 (GGUF)."
        " Quantized artifacts are written beside full-precision ones.",
    )
    output: ExportOutputSpec = Field(default_factory=ExportOutputSpec, description="Output location.")
    validate_: ExportValidationSpec = Field(
        default_factory=ExportValidationSpec, alias="validate", description="Deployment checks."
    )
    image: Image | None = Field(default=None, description="Workload image; the operator's default when unset.")
    resources: PlacedPodResources = Field(
        default_factory=PlacedPodResources, description="CPU, memory and placement of the export pod."
    )
    pod: PodControls = Field(default_factory=PodControls, description=POD_CONTROLS)
    queue_name: ObjectName | None = Field(default=None, description=QUEUE_NAME)
    workload_priority_class_name: ObjectName | None = Field(default=None, description=WORKLOAD_PRIORITY)


class ArtifactValidation(ApiModel):
    """What the deployment check measured for one artifact."""

    passed: bool = Field(description="Whether every check passed.")
    runtime: str | None = Field(default=None, description="The runtime that loaded it, e.g. onnxruntime 1.22.")
    max_relative_error: float | None = Field(default=None, description="Largest relative logit error.")
    greedy_match: bool | None = Field(default=None, description="Greedy continuation identical to the training model.")
    tokenizer_match: bool | None = Field(default=None, description="Token ids identical to the training tokenizer.")
    perplexity: float | None = Field(default=None, description="Validation perplexity.")
    perplexity_increase: float | None = Field(default=None, description="Relative increase over full precision.")
    message: str | None = Field(default=None, description="Why it failed, when it did.")


class Artifact(ApiModel):
    """One exported file or directory."""

    format: Format = Field(description="The format.")
    quantization: Quantization = Field(description="Its quantization.")
    uri: str = Field(description="Where it is.")
    bytes: int = Field(description="Its size.")
    sha256: str = Field(description="SHA-256 of its bytes (of its files, in order, for a directory).")
    validation: ArtifactValidation | None = Field(default=None, description="The deployment check.")


class ModelExportStatus(ApiModel):
    """What the operator observed."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        default=None, description="Summary phase."
    )
    conditions: Conditions = Field(default_factory=list, description="Conditions; Succeeded is the summary.")
    observed_generation: int | None = Field(default=None, description="The generation this status describes.")
    message: str | None = Field(default=None, description="What is happening, or why it failed.")
    checkpoint_uri: str | None = Field(default=None, description="The checkpoint exported.")
    checkpoint_step: int | None = Field(default=None, description="Its step.")
    artifacts: Annotated[list[Artifact], MaxLen(64)] = Field(default_factory=list, description="What was written.")
    report_uri: str | None = Field(default=None, description="The export report (JSON).")
    start_time: Timestamp | None = Field(default=None, description="When the export started.")
    completion_time: Timestamp | None = Field(default=None, description="When it finished.")
    failure: Failure | None = Field(default=None, description="Why it failed, pinned to the pod.")


class ModelExport(Resource):
    """Export a checkpoint to safetensors, ONNX, GGUF or TorchScript and validate it where it will run."""

    KIND: ClassVar[str] = "ModelExport"
    PLURAL: ClassVar[str] = "modelexports"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("mex",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn("Phase", "string", ".status.phase", "Summary phase."),
        PrinterColumn("Formats", "string", ".spec.formats", "Formats requested."),
        PrinterColumn("Quant", "string", ".spec.quantization", "Quantization."),
        PrinterColumn("Step", "integer", ".status.checkpointStep", "Checkpoint step exported."),
        AGE,
        PrinterColumn("Message", "string", ".status.message", "What is happening.", priority=1),
    )

    kind: Literal["ModelExport"] = Field(default="ModelExport", description="ModelExport")
    spec: ModelExportSpec = Field(description="Desired state.")
    status: ModelExportStatus | None = Field(default=None, description="Observed state.")

"""`llmtrain export`: resolve the checkpoint, write each format, prove each artifact, publish, report last.

Each format in `spec.formats` is looked up in `registry.FORMATS` and driven through `formats.ExportFormat`.

Artifacts are written to a local staging directory and validated there; only then are they uploaded
(each file atomically), and the report (`export-report.json`) is written last, so a report never names
an incomplete artifact. A failed validation fails the export (the report says which check failed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import logs, storage
from ..api.modelexport import ModelExport
from ..api.trainingrun import ModelSpec
from ..data import tokenizer as tokenizers
from ..errors import BadInput
from ..model.llama import LlamaConfig
from ..model.shape import ShapeMismatch
from ..model.shape import resolve as resolve_shape
from ..train.loader import Dataset
from .artifacts import Artifact
from .checkpoint import ExportError, check_spec, load, resolve
from .checks import check_tokenizer
from .formats import FULL_PRECISION, ExportInputs
from .registry import FORMATS

REPORT = "export-report.json"


class ValidationFailed(BadInput):
    """An artifact failed its deployment check (permanent: the same checkpoint fails the same way)."""


def _open_dataset(data: str, cache: Path) -> tuple[Dataset, Path]:
    """The dataset and its tokenizer folder. A local or `pvc://` dataset is read in place (its shards
    checked against manifest.json); an `s3://` one is not copied: the validation blocks export reads are
    fetched through the block cache (each checked as it arrives), and only the tokenizer is downloaded."""
    if not storage.is_s3(data):
        dataset = Dataset.open(storage.local_path(data))
        dataset.verify_shards()
        return dataset, dataset.root / dataset.manifest["tokenizer"]["path"]
    from ..train.remote_data import RemoteDataset
    from ..train.shard_cache import BlockCache, budget_from_env

    dataset = RemoteDataset.open_remote(data, BlockCache(cache / "shards", budget_from_env(), stats_name="export"))
    folder = dataset.manifest["tokenizer"]["path"]
    if folder != "tokenizer":  # ingest writes it there; anything else is not a manifest of ours
        raise BadInput(f"{data}/manifest.json: tokenizer.path {folder!r} is not 'tokenizer'; rerun the DataSource")
    return dataset, storage.download_tree(storage.join(data, folder), cache / "dataset-tokenizer", reuse=False)


def _prompts(dataset: Dataset, max_len: int) -> list[list[int]]:
    """Fixed prompts from the validation split, of three lengths."""
    stream = dataset.stream("validation")
    lengths = [min(n, max_len) for n in (8, 24, 48)]
    return [stream.window(i * 64, n).tolist() for i, n in enumerate(lengths)]


def _windows(dataset: Dataset, max_len: int, count: int = 16) -> list[list[int]]:
    """Validation windows for perplexity (the quantized artifacts' check)."""
    stream = dataset.stream("validation")
    length = min(max_len, 128) + 1
    available = max(1, (len(stream) - 1) // length)
    return [stream.window(i * length, length).tolist() for i in range(min(count, available))]


def _corpus(dataset: Dataset, tokenizer: Any, count: int = 16) -> list[str]:
    stream = dataset.stream("validation")
    return [tokenizer.decode(stream.window(i * 97, 40).tolist()) for i in range(count)]


def _export_format(name: str, inputs: ExportInputs, staging: Path, requested: str) -> list[Artifact]:
    """A format's full-precision artifact, then its quantized one when it holds the `requested` quantization;
    each written into `staging` and checked there."""
    fmt = FORMATS[name]
    quantization = fmt.quantization(inputs.model, requested)
    full = fmt.write(inputs, staging, FULL_PRECISION)
    made = [Artifact(name, FULL_PRECISION, full, _name(full, staging), fmt.validate(inputs, full))]
    if quantization:
        quantized = fmt.write(inputs, staging, quantization)
        check = fmt.validate_quantized(inputs, quantized, full, quantization)
        made.append(Artifact(name, quantization, quantized, _name(quantized, staging), check))
    return made


def _spec_shape(run_model: ModelSpec | None, stored: LlamaConfig, where: str) -> LlamaConfig | None:
    """The shape the TrainingRun's spec.model describes: every field it gives (unset ones are the
    checkpoint's, as a run started from existing weights leaves them)."""
    if run_model is None:
        return None
    try:
        return resolve_shape(run_model, stored.vocab_size, stored, where)
    except ShapeMismatch as exc:
        raise ExportError(f"the TrainingRun's spec does not describe the checkpoint: {exc}") from None


def _name(artifact: Path, staging: Path) -> str:
    return artifact.relative_to(staging).as_posix()


def export(
    resource: ModelExport, checkpoint_uri: str, data: str, output: str, cache: Path, run_model: ModelSpec | None = None
) -> dict[str, Any]:
    """Export; `run_model` (the TrainingRun's spec.model, when known) must describe the checkpoint."""
    spec = resource.spec
    unsupported = [f for f in spec.formats if f not in FORMATS]
    if unsupported:
        raise ExportError(f"spec.formats: {unsupported} cannot be exported")
    found = resolve(checkpoint_uri, spec.checkpoint, spec.step)
    logs.audit("ExportStarted", export=resource.name, checkpoint=found.uri, step=found.step)
    dataset, tokenizer_dir = _open_dataset(data, cache)
    model = load(found, cache)
    if model.config.vocab_size != dataset.vocab_size:
        raise ExportError(
            f"the checkpoint's vocabulary ({model.config.vocab_size}) is not the dataset's"
            f" ({dataset.vocab_size}): --data must be the DataSource the run trained on"
        )
    check_spec(model, _spec_shape(run_model, model.config, found.uri))
    training_tokenizer = tokenizers.load(tokenizer_dir)
    check_tokenizer(training_tokenizer, model.config.vocab_size, str(tokenizer_dir))
    max_len = model.config.max_seq_len
    inputs = ExportInputs(
        model=model,
        tokenizer_dir=tokenizer_dir,
        training_tokenizer=training_tokenizer,
        prompts=_prompts(dataset, max_len),
        corpus=_corpus(dataset, training_tokenizer),
        draw_windows=lambda: _windows(dataset, max_len),
        limits=spec.validate_,
    )
    storage.delete(storage.join(output, REPORT))
    staging = Path(tempfile.mkdtemp(prefix="llmtrain-export-", dir=cache if cache.exists() else None))
    artifacts: list[Artifact] = []
    try:
        for name in spec.formats:
            started = time.monotonic()
            made = _export_format(name, inputs, staging, spec.quantization)
            # the format's whole time, on its last artifact
            made[-1].validation["seconds"] = round(time.monotonic() - started, 2)
            artifacts += made
        failed = [a for a in artifacts if not a.passed]
        published = [a.publish(output) for a in artifacts]
        report = {
            "export": resource.name,
            "checkpoint": {"uri": found.uri, "step": found.step},
            "artifacts": published,
            "passed": not failed,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        storage.write_bytes(storage.join(output, REPORT), json.dumps(report, indent=2).encode())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if failed:
        reasons = "; ".join(f"{a.format}: {a.validation.get('message')}" for a in failed)
        raise ValidationFailed(f"deployment check failed: {reasons} (report: {storage.join(output, REPORT)})")
    logs.audit("ExportFinished", export=resource.name, artifacts=len(published))
    return report

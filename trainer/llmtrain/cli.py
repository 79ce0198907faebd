"""The `llmtrain` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__, errors, exitcodes, termination
from .api import DataSource, SpecError, load_resources, select_resource

log = logging.getLogger("llmtrain.cli")


def _print_spec_error(exc: SpecError) -> int:
    """A refused file for a person: where, then each problem on its own line; exit 2."""
    print(f"error: {exc.source}" if exc.source else "error:", file=sys.stderr)
    for problem in exc.problems or [str(exc)]:
        print(f"  {problem}", file=sys.stderr)
    return exitcodes.BAD_INPUT


def _validate(args: argparse.Namespace) -> int:
    try:
        resources = load_resources(args.file)
    except SpecError as exc:
        return _print_spec_error(exc)
    if args.output == "json":
        print(json.dumps([r.to_wire() for r in resources], indent=2))
    else:
        for resource in resources:
            print(f"{resource.KIND.lower()}/{resource.name} valid")
        if not resources:
            print(f"{args.file}: no llmtrain.dev resources found", file=sys.stderr)
            return exitcodes.BAD_INPUT
    return exitcodes.OK


def failure_exit_code(exc: BaseException) -> int:
    """The documented exit code for a failure, read from its type (`llmtrain.errors`)."""
    return errors.exit_code_for(exc)


def _report(result: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
    """The report: the last stdout line (complete) and the termination message (compact)."""
    print(json.dumps(result, separators=(",", ":")), flush=True)
    termination.write(result if summary is None else summary)


def _fail(exc: BaseException) -> int:
    """Report a failure with the exit code of its type; re-raise interruptions that are not failures."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise exc
    code = failure_exit_code(exc)
    message = errors.describe(exc)
    if code == 1:
        log.error("failed", exc_info=exc)
    else:
        log.error("failed", extra={"error": message, "exitCode": code})
        print(f"error: {message}", file=sys.stderr)
    _report({"error": message, "exitCode": code})
    return code


def _check_stage_arguments(args: argparse.Namespace, indexed: frozenset[str]) -> None:
    if args.stage is not None and args.shard_count is None:
        raise SpecError([], f"--stage {args.stage} needs --shard-count (the number of parts)")
    if args.stage in indexed and args.shard_index is None:
        raise SpecError([], f"--stage {args.stage} runs one task: give --shard-index")
    if args.stage is None and (args.shard_index is None) != (args.shard_count is None) and not args.merge:
        raise SpecError([], "--shard-index and --shard-count go together")


def _ingest(args: argparse.Namespace) -> int:
    from . import logs

    logs.setup()
    try:
        resources = load_resources(args.file)
        source = select_resource(resources, DataSource, args.name)
        base_dir = (
            Path(args.base_dir)
            if args.base_dir
            else (Path.cwd() if args.file == "-" else Path(args.file).resolve().parent)
        )
        output = args.output or source.spec.output.uri
        if not output:
            raise SpecError([], "no output: set spec.output.uri or pass --output")
        if "://" not in output and args.output is None:
            output = str(base_dir / output)
        from .data.imported_tokenizer import shared_from_run_file
        from .data.pipeline import INDEXED, ingest

        _check_stage_arguments(args, INDEXED)
        source = shared_from_run_file(source, resources, base_dir)

        report = ingest(
            source,
            output,
            base_dir,
            workers=args.workers or source.spec.workers,
            shard_index=args.shard_index,
            shard_count=args.shard_count,
            merge_only=args.merge,
            force=args.force,
            stage=args.stage,
        )
    except BaseException as exc:  # DCP's CheckpointException is a BaseException; _fail maps every type
        return _fail(exc)
    _report(report, {k: report[k] for k in ("name", "output", "tokenizer", "stats", "skipped") if k in report})
    return exitcodes.OK


def _train(args: argparse.Namespace) -> int:
    from . import logs

    logs.setup()
    try:
        from .api import TrainingRun

        run = select_resource(load_resources(args.file), TrainingRun, args.name)
        from .train.loop import Options, train

        options = Options(
            data=args.data,
            checkpoints=args.checkpoints,
            progress=args.progress,
            metrics_dir=Path(args.metrics_dir) if args.metrics_dir else None,
            stop_at_step=args.stop_at_step,
            init=_init_uri(run, args.init),
            init_select=args.init_select,
            init_step=args.init_step,
        )
        if args.max_steps is not None:
            run.spec.training.max_steps = args.max_steps
        code = train(run, options)
        termination.write({"exitCode": code, **_TRAIN_EXITS.get(code, {})})
        return code
    except BaseException as exc:  # DCP's CheckpointException is a BaseException; _fail maps every type
        return _fail(exc)


def _init_uri(run: Any, given: str | None) -> str | None:
    """The starting weights: --init (what the operator resolves), else spec.init.from; refs need --init."""
    init = run.spec.init
    if init is None:
        if given:
            raise SpecError([], "--init needs spec.init in the TrainingRun (the run must say it starts from weights)")
        return None
    if given or init.from_uri:
        return given or init.from_uri
    ref = "trainingRunRef" if init.training_run_ref else "modelExportRef"
    raise SpecError([], f"spec.init.{ref}: pass --init (the weights' URI; the operator and `llmtrain run` resolve it)")


_TRAIN_EXITS = {
    exitcodes.DIVERGED: {"error": "the loss became non-finite; the last good state was saved"},
    exitcodes.RETRYABLE: {"error": "interrupted (SIGTERM) after saving a checkpoint; a rerun resumes"},
}


def _export(args: argparse.Namespace) -> int:
    from . import logs

    logs.setup()
    try:
        from .api import ModelExport

        resources = load_resources(args.file)
        resource = select_resource(resources, ModelExport, args.name)
        from .export.pipeline import REPORT, export
        from .storage import join

        runs = {r.name: r for r in resources if r.KIND == "TrainingRun"}
        ref = resource.spec.training_run_ref
        run_model = runs[ref.name].spec.model if ref is not None and ref.name in runs else None

        checkpoint = args.checkpoint or resource.spec.checkpoint_uri
        if not checkpoint:
            raise SpecError([], "no checkpoint: pass --checkpoint (the run's checkpoint URI) or set spec.checkpointUri")
        output = args.output or resource.spec.output.uri
        if not output:
            raise SpecError([], "no output: set spec.output.uri or pass --output")
        report = export(resource, checkpoint, args.data, output, Path(args.cache), run_model)
    except BaseException as exc:  # DCP's CheckpointException is a BaseException; _fail maps every type
        return _fail(exc)
    summary = {
        "checkpoint": report.get("checkpoint"),
        "artifacts": report.get("artifacts"),
        "reportUri": join(output, REPORT),
    }
    _report(report, summary)
    return exitcodes.OK


def _run(args: argparse.Namespace) -> int:
    from .local.runner import run

    try:
        return run(args.file, Path(args.workdir))
    except KeyboardInterrupt:  # Ctrl-C before the runner's own handler is installed: its code, 130
        return 130
    except BaseException as exc:  # DCP's CheckpointException is a BaseException; the taxonomy maps every type
        return _fail_plainly(exc)


def _fail_plainly(exc: BaseException) -> int:
    """A failure of a command a person runs (run, get): the exit code of its type and one line on stderr
    (a spec error lists its problems); no JSON report. An unmapped failure (a bug) keeps its traceback."""
    if isinstance(exc, SpecError):
        return _print_spec_error(exc)
    code = failure_exit_code(exc)
    if code == 1 or isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise exc
    print(f"error: {errors.describe(exc)}", file=sys.stderr)
    return code


def _get(args: argparse.Namespace) -> int:
    try:
        return _show(args)
    except BaseException as exc:  # an unreadable work directory included
        return _fail_plainly(exc)


def _show(args: argparse.Namespace) -> int:
    import yaml

    from .local import table
    from .local.filestore import FileStore
    from .local.runner import table_text

    kinds = None
    if args.kind and args.kind != "all":
        for alias in args.kind.split(","):
            if alias not in table.ALIASES:
                known = ", ".join(sorted(table.ALIASES))
                print(f"error: unknown resource type {alias!r}; one of: all, {known}", file=sys.stderr)
                return exitcodes.BAD_INPUT
        kinds = [table.ALIASES[a] for a in args.kind.split(",")]
    if not (Path(args.workdir) / "state").is_dir():
        print(f"No resources found (no llmtrain run in {args.workdir}).", file=sys.stderr)
        return exitcodes.OK
    store = FileStore(Path(args.workdir))
    if args.output in ("json", "yaml"):
        items = [
            o
            for k in kinds or table.KINDS
            for o in store.list(k.KIND, None)
            if not args.names or o["metadata"]["name"] in args.names
        ]
        document = {"apiVersion": "v1", "kind": "List", "items": items}
        print(json.dumps(document, indent=2) if args.output == "json" else yaml.safe_dump(document, sort_keys=False))
        return exitcodes.OK
    print(table_text(store, kinds, args.output == "wide", args.names))
    return exitcodes.OK


def _report_page(args: argparse.Namespace) -> int:
    try:
        return _write_report(args)
    except BaseException as exc:  # a missing run or file: one line and its exit code
        return _fail_plainly(exc)


def _write_report(args: argparse.Namespace) -> int:
    from . import report
    from .report import locate

    if args.name is None and args.metrics is None:
        print("error: name the TrainingRun (llmtrain report NAME), or give --metrics PATH|URI", file=sys.stderr)
        return exitcodes.BAD_INPUT
    if args.metrics:
        source = args.metrics
    elif args.workdir:
        source = locate.from_workdir(Path(args.workdir), args.name)
    else:
        source = locate.from_cluster(args.name, args.namespace)
    output = Path(args.output or f"{args.name or 'training'}-report.html")
    metrics = report.write(args.name or source, source, output)
    print(f"{output}: {len(metrics.rows)} logged steps from {source}")
    return exitcodes.OK


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer no smaller than `minimum` (what it counts names the fix)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}: give {what} (>= {minimum})")
        return value

    return parse


_positive_int = _int_at_least(1, "a count of at least one")
_steps = _int_at_least(1, "the number of optimizer steps")
_index = _int_at_least(0, "a part index counted from 0")


def _resource_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("-f", "--file", required=True, help=f"a YAML/JSON file holding the {kind}, or -")
    parser.add_argument("--name", help=f"which {kind}, when the file holds several")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmtrain", description="Train large language models from scratch.")
    parser.add_argument("--version", action="version", version=f"llmtrain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate",
        help="check the llmtrain resources in a file against the API",
        description="Check every DataSource, TrainingRun and ModelExport in FILE (YAML or JSON, '-' for stdin)"
        " with the same rules the API server applies; print them with defaults filled using -o json.",
    )
    validate.add_argument("-f", "--file", required=True, help="a YAML/JSON file, or - for stdin")
    validate.add_argument("-o", "--output", choices=["text", "json"], default="text")
    validate.set_defaults(handler=_validate)

    ingest = commands.add_parser(
        "ingest",
        help="run a DataSource: raw text to tokenizer and token shards",
        description="Read, validate, normalize and dedupe the DataSource's text, train its tokenizer and write"
        " token shards plus manifest.json (last). The report is the last line of stdout (JSON). Exit codes:"
        " 0 ok, 2 bad input (permanent), 75 transient failure (retry).",
    )
    _resource_arguments(ingest, "DataSource")
    ingest.add_argument("--output", help="output URI or directory (overrides spec.output.uri)")
    ingest.add_argument("--workers", type=_positive_int, help="scan processes on this machine (default: spec.workers)")
    ingest.add_argument(
        "--stage",
        choices=("scan", "dedup", "cluster", "tokenizer", "encode", "manifest"),
        help="run one stage (one task of scan, dedup or encode: --shard-index), as a pod does",
    )
    ingest.add_argument("--shard-index", type=_index, help="the task of an indexed stage (default stage: scan)")
    ingest.add_argument("--shard-count", type=_positive_int, help="number of parts the input is split into")
    ingest.add_argument("--merge", action="store_true", help="every stage after the scan, in this process")
    ingest.add_argument("--force", action="store_true", help="redo even if a manifest with this spec exists")
    ingest.add_argument(
        "--base-dir", help="folder that relative local paths are resolved against (default: the file's)"
    )
    ingest.set_defaults(handler=_ingest)

    train = commands.add_parser(
        "train",
        help="run a TrainingRun: train the model on a DataSource's shards (directly or under torchrun)",
        description="Train the TrainingRun's model on the dataset at --data, checkpointing to --checkpoints and"
        " resuming from its latest checkpoint. Exit codes: 0 done, 2 bad input, 3 diverged (non-finite loss,"
        " last good state saved), 75 interrupted by SIGTERM after a checkpoint (rerun to resume).",
    )
    _resource_arguments(train, "TrainingRun")
    train.add_argument(
        "--data",
        required=True,
        action="append",
        help="the dataset: the DataSource's output (manifest.json); a mixture (spec.data): one per source, in order",
    )
    train.add_argument("--checkpoints", required=True, help="checkpoint URI or directory")
    train.add_argument("--progress", help="where to write the progress report (JSON)")
    train.add_argument(
        "--metrics-dir",
        help="JSONL metrics and TensorBoard event files (copied to <checkpoints>/metrics/ at each checkpoint and at"
        " the end)",
    )
    train.add_argument("--max-steps", type=_steps, help="override spec.training.maxSteps (the schedule follows it)")
    train.add_argument(
        "--stop-at-step", type=_steps, help="checkpoint and exit 0 after this step; the schedule still spans maxSteps"
    )
    train.add_argument(
        "--init",
        help="starting weights at step 0 (spec.init): a Hugging Face Llama directory, a checkpoint directory or root",
    )
    train.add_argument(
        "--init-select",
        choices=["latest", "best", "step"],
        default="latest",
        help="with a checkpoint root as --init: which checkpoint (default latest)",
    )
    train.add_argument("--init-step", type=_steps, help="with --init-select step: the step")
    train.set_defaults(handler=_train)

    export = commands.add_parser(
        "export",
        help="run a ModelExport: write the checkpoint in deployable formats and prove each in its runtime",
        description="Resolve the checkpoint (a directory, or the run's checkpoint root with spec.checkpoint),"
        " write every format in spec.formats, load each in its real runtime and compare it with the training"
        " model, then publish the artifacts and export-report.json (last; also the last stdout line)."
        " Exit codes: 0 ok, 2 bad input or a failed deployment check, 75 transient.",
    )
    _resource_arguments(export, "ModelExport")
    export.add_argument("--checkpoint", help="a checkpoint directory or the run's checkpoint root")
    export.add_argument(
        "--data", required=True, help="the DataSource's output (path, pvc:// or s3://): tokenizer, validation shards"
    )
    export.add_argument("--output", help="output URI or directory (overrides spec.output.uri)")
    export.add_argument("--cache", default="/tmp/llmtrain-cache", help="local scratch space")
    export.set_defaults(handler=_export)
    commands.add_parser(
        "launch",
        help="run torchrun as a pod's main process, keeping the workers' exit codes (llmtrain launch -- ARGS)",
        add_help=False,
    )
    run = commands.add_parser(
        "run",
        help="run a whole run file (DataSource, TrainingRun, ModelExport) on this machine, no cluster needed",
        description="Apply FILE to a work directory and drive every resource to the end with the operator's own"
        " reconcile logic; pods run as local processes. Ctrl-C checkpoints and stops; rerun to resume."
        " Exit codes: 0 all succeeded, 1 something failed, 2 bad input, 130 interrupted.",
    )
    run.add_argument("-f", "--file", required=True, help="the run file (YAML/JSON), or -")
    run.add_argument("--workdir", default="work", help="state, logs and outputs (default: ./work)")
    run.set_defaults(handler=_run)

    get = commands.add_parser(
        "get",
        help="show the status of the resources in a work directory, like kubectl get",
        description="Print the resources `llmtrain run` manages in WORKDIR with the CRDs' printer columns.",
    )
    get.add_argument(
        "kind", nargs="?", default="all", help="all, datasources (ds), trainingruns (tr), modelexports (mex)"
    )
    get.add_argument("names", nargs="*", help="only these names")
    get.add_argument("--workdir", default="work", help="the work directory of `llmtrain run` (default: ./work)")
    get.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"], default="table")
    get.set_defaults(handler=_get)

    report = commands.add_parser(
        "report",
        help="a run's curves (loss, validation loss, learning rate, tokens/s, grad norm) as one HTML page",
        description="Render the metrics a TrainingRun keeps beside its checkpoints (<checkpoint uri>/metrics/"
        "metrics.jsonl) as one self-contained HTML page with inline SVG charts. The run is read from the cluster"
        " kubectl points at, from a work directory (--workdir), or the file is given (--metrics).",
    )
    report.add_argument("name", nargs="?", help="the TrainingRun")
    where = report.add_mutually_exclusive_group()
    where.add_argument("--workdir", help="the work directory of `llmtrain run` holding the run")
    where.add_argument("--metrics", help="a metrics.jsonl: a path, pvc:// (under $LLMTRAIN_PVC_ROOT) or s3:// URI")
    report.add_argument("-n", "--namespace", help="the run's namespace (default: kubectl's current one)")
    report.add_argument("-o", "--output", help="the page to write (default: NAME-report.html)")
    report.set_defaults(handler=_report_page)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["launch"]:  # everything after it belongs to torchrun
        from .launch import main as launch

        return launch(argv[1:])
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())

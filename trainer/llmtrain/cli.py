"""The `llmtrain` command line."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__, exitcodes
from .api import SpecError, load_resources


def _validate(args: argparse.Namespace) -> int:
    try:
        resources = load_resources(args.file)
    except SpecError as exc:
        print(f"error: {exc.source}" if exc.source else "error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    if args.output == "json":
        print(json.dumps([r.to_wire() for r in resources], indent=2))
    else:
        for resource in resources:
            print(f"{resource.KIND.lower()}/{resource.name} valid")
        if not resources:
            print(f"{args.file}: no llmtrain.dev resources found", file=sys.stderr)
            return exitcodes.BAD_INPUT
    return exitcodes.OK


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())

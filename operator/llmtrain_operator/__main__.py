"""`python -m llmtrain_operator`: run the operator (settings from the environment, see settings.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from llmtrain import logs

from .settings import ConfigurationError, from_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmtrain-operator", description="The llmtrain Kubernetes operator.")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: LLMTRAIN_NAMESPACES, else every namespace",
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint URL")
    args = parser.parse_args(argv)
    logs.setup()
    json_lines = logging.StreamHandler(sys.stderr)  # kopf's own records, as JSON lines too
    json_lines.setFormatter(logs.JsonFormatter())
    logging.getLogger("kopf").addHandler(json_lines)
    logging.getLogger("kopf").setLevel(logging.INFO)
    logging.getLogger("kopf").propagate = False
    try:
        settings = from_env()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.namespace:
        from dataclasses import replace

        settings = replace(settings, namespaces=tuple(args.namespace))
    from .operator import Operator

    operator = Operator(settings)
    if settings.metrics_port:
        operator.metrics.serve(settings.metrics_port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(operator.run(liveness=args.liveness))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

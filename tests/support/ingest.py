"""Helpers for the workload tier: run the real `llmtrain ingest` CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.paths import ROOT


@dataclass
class Result:
    code: int
    report: dict[str, Any]
    stderr: str


def run_ingest(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    process = subprocess.run(
        [sys.executable, "-m", "llmtrain.cli", "ingest", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    last = process.stdout.strip().splitlines()[-1] if process.stdout.strip() else "{}"
    return Result(process.returncode, json.loads(last), process.stderr)


def data_source(name: str = "corpus", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sources": [{"local": {"path": "data/*.txt"}}],
        "tokenizer": {"type": "bpe", "vocabSize": 1024},
        "validation": {"minChars": 100},
        "split": {"validationFraction": 0.2},
        "output": {"shardTokens": 50_000},
    }
    base.update(spec)
    return {"apiVersion": "llmtrain.dev/v1alpha1", "kind": "DataSource", "metadata": {"name": name}, "spec": base}


def write_spec(directory: Path, resource: dict[str, Any]) -> Path:
    path = directory / "run.yaml"
    path.write_text(yaml.safe_dump(resource))
    return path


@pytest.fixture
def shakespeare(tmp_path: Path) -> Path:
    """A run directory whose data/ holds six plays."""
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted((ROOT / "examples/data/shakespeare").glob("*.txt"))[:6]:
        (data / path.name).write_bytes(path.read_bytes())
    return tmp_path

"""`import llmtrain` and the operator stay light: no torch, no transformers, no kubernetes client."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets", "onnx", "sentencepiece", "kubernetes", "kopf", "celpy")


@pytest.mark.parametrize("module", ["llmtrain", "llmtrain.api", "llmtrain.cli", "llmtrain_operator"])
def test_import_pulls_in_nothing_heavy(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == ""

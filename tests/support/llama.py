"""llama-cpp-python for the GGUF checks: optional on a developer's machine, required in CI."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

MISSING = "llama-cpp-python is not installed: `make llama-cpp` builds it (about 7 minutes)"


def in_ci() -> bool:
    """`.ci/run` (and every CI service) sets CI=true."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def require_llama_cpp() -> ModuleType:
    """The llama_cpp module; without it the test skips, or fails under CI (GGUF is a claimed format)."""
    try:
        import llama_cpp
    except ImportError:
        if in_ci():
            pytest.fail(f"{MISSING}; CI must check GGUF, so this is a failure, not a skip")
        pytest.skip(MISSING)
    return llama_cpp

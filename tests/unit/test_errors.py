"""The error taxonomy: every project error has an exit code from its type; foreign errors are mapped once."""

from __future__ import annotations

import ast
import errno
import json
from pathlib import Path

import pytest

from llmtrain import cli, errors, exitcodes
from support.paths import ROOT

PACKAGE = ROOT / "trainer" / "llmtrain"


def _project_error_classes() -> list[tuple[str, type[BaseException]]]:
    """Every exception class the workload package defines, imported by module path."""
    import importlib

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Failed", "Corpus", "Secret", "Spec")):
                cls = getattr(importlib.import_module(module), node.name)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    found.append((f"{module}.{node.name}", cls))
    return found


# Errors of the control plane that never reach a workload's exit code (the store's answers to the shells).
NOT_WORKLOAD_ERRORS = {"llmtrain.control.store.NotFound", "llmtrain.control.store.Conflict"}


def test_every_project_error_derives_from_the_taxonomy() -> None:
    classes = _project_error_classes()
    assert len(classes) >= 10
    strays = [
        name for name, cls in classes if name not in NOT_WORKLOAD_ERRORS and not issubclass(cls, errors.LlmtrainError)
    ]
    assert not strays, f"derive these from llmtrain.errors (BadInput, Diverged, Retryable, MaybeRetryable): {strays}"


def test_exit_code_follows_the_type() -> None:
    from llmtrain import storage
    from llmtrain.api import SpecError
    from llmtrain.data.sources import SourceError

    assert cli.failure_exit_code(SpecError([], "bad")) == exitcodes.BAD_INPUT
    assert cli.failure_exit_code(errors.Diverged("nan")) == exitcodes.DIVERGED
    assert cli.failure_exit_code(errors.Retryable("later")) == exitcodes.RETRYABLE
    assert cli.failure_exit_code(storage.StorageError("gone", retryable=True)) == exitcodes.RETRYABLE
    assert cli.failure_exit_code(storage.StorageError("denied")) == exitcodes.BAD_INPUT
    assert cli.failure_exit_code(SourceError("timeout", retryable=True)) == exitcodes.RETRYABLE


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (MemoryError(), exitcodes.BAD_INPUT),
        (json.JSONDecodeError("Expecting value", "x", 0), exitcodes.BAD_INPUT),
        (PermissionError(errno.EACCES, "Permission denied", "/out"), exitcodes.BAD_INPUT),
        (OSError(errno.EROFS, "Read-only file system", "/out"), exitcodes.BAD_INPUT),
        (OSError(errno.ECONNRESET, "Connection reset by peer"), exitcodes.RETRYABLE),
        (TimeoutError("timed out"), exitcodes.RETRYABLE),
        (RuntimeError("a bug"), 1),
    ],
)
def test_foreign_errors_are_mapped_at_the_boundary(exc: BaseException, code: int) -> None:
    assert errors.exit_code_for(exc) == code


def test_a_project_error_inside_a_foreign_wrapper_keeps_its_code() -> None:
    try:
        try:
            raise errors.Retryable("storage down")
        except errors.Retryable as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert errors.exit_code_for(outer) == exitcodes.RETRYABLE


def test_dcp_checkpoint_exception_is_a_base_exception_and_gets_a_code() -> None:
    from torch.distributed.checkpoint.api import CheckpointException

    assert not issubclass(CheckpointException, Exception)  # why the CLI catches BaseException
    from torch.distributed.checkpoint.api import _wrap_exception  # how DCP stores each rank's failure

    bad = CheckpointException("load", {0: _wrap_exception(ValueError("corrupt shard"))})
    flaky = CheckpointException(
        "save", {0: _wrap_exception(errors.Retryable("s3 down")), 1: _wrap_exception(ConnectionResetError())}
    )
    assert errors.exit_code_for(bad) == exitcodes.BAD_INPUT
    assert errors.exit_code_for(flaky) == exitcodes.RETRYABLE


def test_messages_are_never_empty() -> None:
    assert errors.describe(MemoryError()).startswith("out of memory")
    assert "Read-only file system" in errors.describe(OSError(errno.EROFS, "Read-only file system", "/out"))
    assert errors.describe(KeyError()) == "KeyError"


def test_a_memory_error_is_reported_with_a_message_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._fail(MemoryError()) == exitcodes.BAD_INPUT
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["exitCode"] == exitcodes.BAD_INPUT
    assert report["error"].startswith("out of memory")


def test_interruptions_are_not_reported_as_failures() -> None:
    with pytest.raises(KeyboardInterrupt):
        cli._fail(KeyboardInterrupt())


@pytest.mark.parametrize("flag", ["--max-steps", "--stop-at-step"])
@pytest.mark.parametrize("value", ["0", "-5", "x"])
def test_step_flags_refuse_values_below_one(flag: str, value: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(["train", "-f", str(tmp_path / "run.yaml"), flag, value])
    assert exited.value.code == exitcodes.BAD_INPUT
    assert flag in capsys.readouterr().err

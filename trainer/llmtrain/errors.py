"""One error taxonomy: the type of a failure decides the workload's exit code.

Every error the project raises derives from `LlmtrainError` through one of its three kinds (bad input,
diverged, retryable), so `exit_code_for` reads the code from the type. Errors of other libraries are
mapped here, at the boundary, and nowhere else; anything unmapped is a bug (exit 1, with a traceback).
"""

from __future__ import annotations

import errno
import json

from . import exitcodes


class LlmtrainError(Exception):
    """The root of the project's errors. `exit_code` is the documented exit code of the failure."""

    exit_code: int = exitcodes.BAD_INPUT


class BadInput(LlmtrainError):
    """Bad input (a spec, a file, a checkpoint, a dataset): retrying cannot help. Exit 2."""

    exit_code = exitcodes.BAD_INPUT


class Diverged(LlmtrainError):
    """Training diverged (non-finite loss or weights). Exit 3."""

    exit_code = exitcodes.DIVERGED


class Retryable(LlmtrainError):
    """A transient failure (storage, network, a peer): a rerun may succeed. Exit 75."""

    exit_code = exitcodes.RETRYABLE


class MaybeRetryable(LlmtrainError):
    """An error whose instance says whether trying again may help (`retryable`): exit 75, else 2."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return exitcodes.RETRYABLE if self.retryable else exitcodes.BAD_INPUT


#: errnos of OSErrors that a rerun may cure (the network, a busy resource); the others are bad input
_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EPIPE,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EIO,
}


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for a failure: 2 bad input, 3 diverged, 75 retryable, 1 a bug."""
    if isinstance(exc, LlmtrainError):
        return exc.exit_code
    for cause in _chain(exc)[1:]:  # a foreign wrapper (DCP's CheckpointException) around one of ours
        if isinstance(cause, LlmtrainError):
            return cause.exit_code
    if _is_out_of_memory(exc):
        return exitcodes.BAD_INPUT
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return exitcodes.BAD_INPUT
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return exitcodes.RETRYABLE
    if isinstance(exc, OSError):
        return exitcodes.RETRYABLE if exc.errno in _TRANSIENT_ERRNOS else exitcodes.BAD_INPUT
    if type(exc).__name__ == "CheckpointException":  # torch DCP: a BaseException wrapping each rank's error
        return _checkpoint_exception_code(exc)
    return 1


def describe(exc: BaseException) -> str:
    """A one-line message for the report; never empty (MemoryError and allocator failures have no text)."""
    if _is_out_of_memory(exc):
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return (
            "out of memory"
            + (f": {detail}" if detail else "")
            + ("; give the pod more memory, or lower the batch size, sequence length or model size")
        )
    if isinstance(exc, OSError) and not isinstance(exc, LlmtrainError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = str(exc).strip()
    return text or type(exc).__name__


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _checkpoint_exception_code(exc: BaseException) -> int:
    """DCP reports each rank's failure in `failures`: retryable only if every one is."""
    failures = getattr(exc, "failures", None) or {}
    inner = [f[0] if isinstance(f, tuple) and f else f for f in failures.values()]  # (exception, traceback)
    codes = {exit_code_for(e) for e in inner if isinstance(e, BaseException)}
    codes.discard(1)
    if codes == {exitcodes.RETRYABLE}:
        return exitcodes.RETRYABLE
    return exitcodes.BAD_INPUT

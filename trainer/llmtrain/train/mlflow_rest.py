"""MLflow's tracking REST API (`/api/2.0/mlflow/...`) over urllib: no mlflow client in the trainer.

A call is retried with backoff on what may pass (HTTP 5xx and 429, a refused or dropped connection, a
timeout); any other answer is final. Errors name the endpoint and MLflow's error code, never the
credentials (a bearer token, or a username and password sent as HTTP basic authentication).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import MaybeRetryable

API = "/api/2.0/mlflow/"
#: waits between the attempts of one call (6 attempts in about 15 s)
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
#: the largest answer read: MLflow's are a few KiB; a server sending more is not believed
MAX_ANSWER_BYTES = 4 << 20


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following one would send the credentials to wherever it points."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise MlflowError(
            f"HTTP {code}: the server redirects to {newurl[:200]}; give spec.tracking.mlflow.uri the final address"
        )


_OPENER = urllib.request.build_opener(_RefuseRedirects)


class MlflowError(MaybeRetryable):
    """A call that failed: `retryable` when the server was unreachable or busy (the retries ran out)."""

    def __init__(self, message: str, status: int | None = None, code: str = "", retryable: bool = False) -> None:
        super().__init__(message, retryable)
        self.status, self.code = status, code


def authorization(token: str | None, username: str | None, password: str | None) -> str | None:
    """The Authorization header value: a bearer token, else basic authentication, else none."""
    if token:
        return f"Bearer {token}"
    if username is not None and password is not None:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    return None


class MlflowRest:
    def __init__(
        self,
        base_uri: str,
        auth: str | None = None,
        timeout: float = 10.0,
        delays: Sequence[float] = RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_uri, self._auth, self.timeout, self.delays, self.sleep = (
            base_uri.rstrip("/"),
            auth,
            timeout,
            delays,
            sleep,
        )

    def get(self, endpoint: str, **query: str) -> dict[str, Any]:
        return self.call("GET", endpoint, query=query)

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", endpoint, body=body)

    def call(
        self, method: str, endpoint: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One call, retried while the failure may pass; its JSON answer, or MlflowError."""
        url = self.base_uri + API + endpoint + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        for delay in (*self.delays, None):
            try:
                return self._once(method, url, data)
            except MlflowError as exc:
                if not exc.retryable or delay is None:
                    raise MlflowError(f"MLflow {endpoint}: {exc}", exc.status, exc.code, exc.retryable) from None
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _once(self, method: str, url: str, data: bytes | None) -> dict[str, Any]:
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header("User-Agent", "llmtrain-trainer")
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                text = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise MlflowError(f"unreachable ({type(reason).__name__}: {reason})", retryable=True) from None
        if len(text) > MAX_ANSWER_BYTES:
            raise MlflowError(
                f"the answer is larger than {MAX_ANSWER_BYTES:,} bytes: is the URI an MLflow tracking server?"
            )
        try:
            answer = json.loads(text) if text.strip() else {}
        except ValueError:
            raise MlflowError("the answer is not JSON: is the URI an MLflow tracking server?") from None
        return answer if isinstance(answer, dict) else {}


def _http_error(exc: urllib.error.HTTPError) -> MlflowError:
    """MLflow's error code and message from a refused call; 5xx and 429 may pass."""
    try:
        body = json.loads(exc.read(MAX_ANSWER_BYTES) or b"{}")
    except (ValueError, OSError):
        body = {}
    body = body if isinstance(body, dict) else {}
    code, message = str(body.get("error_code") or ""), str(body.get("message") or exc.reason)
    hints = {401: " (check the credentials Secret)", 403: " (the credentials may not do this)"}
    return MlflowError(
        f"HTTP {exc.code} {code} {message[:300]}{hints.get(exc.code, '')}".replace("  ", " "),
        exc.code,
        code,
        retryable=exc.code >= 500 or exc.code == 429,
    )

"""Files over HTTP(S): streamed, size-limited, under an overall deadline, retried with backoff.

Only http and https, never through a proxy (the address checks need the connection to go where they
looked). Each connection resolves its host once, checks every address against the network policy
(`llmtrain.netpolicy`: in a cluster, the operator's lists) and connects to an address it checked, so a
name that resolves elsewhere the second time (DNS rebinding) reaches nothing new; TLS still verifies the
certificate for the name. Redirects open new connections, checked the same way, and credentials never
follow a redirect to another origin. A body that ends before its Content-Length or breaks its chunked
encoding is resumed with a Range request when the server offers one, else the input fails retryably: a
truncated document is never kept as whole. Each URL is read within `deadline.Deadline`.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit

from ... import netpolicy, secrets
from ...api.datasource import HttpSource
from . import SourceError
from .deadline import Deadline

RETRIES = 4
BACKOFF_SECONDS = 0.5
TIMEOUT_SECONDS = 30.0  # one socket operation; the deadline bounds the whole read
CHUNK = 1 << 16
_BROKEN = (urllib.error.URLError, http.client.HTTPException, OSError)


def _check_scheme(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise SourceError(f"{url}: only http and https URLs are fetched")


def _checked_addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """getaddrinfo's answers for `host`, once; all of them must pass the policy."""
    policy = netpolicy.from_env()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SourceError(f"cannot resolve {host} ({exc.strerror})", retryable=True) from None
    except UnicodeError:
        raise SourceError(f"{host}: not a valid host name") from None
    for info in infos:
        denied = policy.refusal(info[4][0])
        if denied is not None:
            raise SourceError(
                f"refusing to connect to {host} ({info[4][0]}): {denied} is denied to HTTP sources"
                f" ({netpolicy.DENIED_ENV}; in a cluster the operator's ingest.httpSources settings decide)"
            )
    return infos


def _pinned_connector(deadline: Deadline):  # type: ignore[no-untyped-def]
    """socket.create_connection's stand-in: connects only to addresses it checked, watched by `deadline`."""

    def connect(address: tuple[str, int], timeout: Any = None, source_address: Any = None) -> socket.socket:
        error: OSError = OSError(f"no address for {address[0]}")
        for family, kind, proto, _, sockaddr in _checked_addresses(*address):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout if isinstance(timeout, float | int) else TIMEOUT_SECONDS)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            deadline.watch(sock)
            return sock
        raise error

    return connect


def _opener(deadline: Deadline) -> urllib.request.OpenerDirector:
    connector = _pinned_connector(deadline)

    class Pinned(http.client.HTTPConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = connector

    class PinnedTls(http.client.HTTPSConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("check_hostname", None)
            super().__init__(*args, **kwargs)
            self._create_connection = connector

        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)  # the TLS socket: shutting the raw one down is not enough

    class HttpHandler(urllib.request.HTTPHandler):
        def http_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(Pinned, req)

    class HttpsHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):  # type: ignore[no-untyped-def]
            return self.do_open(PinnedTls, req, context=self._context)

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), HttpHandler, HttpsHandler, _CheckedRedirects)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects go to http(s) only (their addresses are checked on connect); Authorization is dropped
    when the origin changes."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _check_scheme(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


def _fetch(opener: urllib.request.OpenerDirector, url: str, headers: dict[str, str], deadline: Deadline) -> Any:
    """The response, after up to RETRIES retries of connection errors, 429 and 5xx."""
    request = urllib.request.Request(url, headers=headers)
    for attempt in range(RETRIES + 1):
        deadline.check()
        try:
            return opener.open(request, timeout=max(0.01, min(TIMEOUT_SECONDS, deadline.remaining())))
        except urllib.error.HTTPError as exc:
            exc.close()
            retryable = exc.code == 429 or exc.code >= 500
            if not retryable or attempt == RETRIES:
                raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}", retryable=retryable) from None
        except _BROKEN as exc:
            deadline.check()
            if attempt == RETRIES:
                reason = getattr(exc, "reason", exc)
                raise SourceError(f"{url}: {reason} after {RETRIES + 1} attempts", retryable=True) from None
        time.sleep(min(BACKOFF_SECONDS * 2**attempt, deadline.remaining()))
    raise AssertionError("unreachable")


class _Body(IO[bytes]):
    """The body of `url`: fails past `limit` bytes; resumes a body that ends early with a Range request
    (If-Range on its validator) when the server offers ranges, else fails retryably."""

    def __init__(self, opener: Any, url: str, headers: dict[str, str], deadline: Deadline, limit: int) -> None:
        self._opener, self._url, self._headers, self._deadline, self._limit = opener, url, headers, deadline, limit
        self._response = _fetch(opener, url, headers, deadline)
        self._validator = self._response.headers.get("ETag") or self._response.headers.get("Last-Modified")
        self._ranges = self._response.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        self._total = self._response.length  # None when chunked or unknown
        self._read = self._resumes = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        while True:
            try:
                data = self._response.read(size)
                broken: BaseException | None = None
            except _BROKEN as exc:  # a broken chunked encoding, a reset connection
                data, broken = b"", exc
            self._deadline.check()
            if data or size == 0 or (broken is None and not self._response.length):
                break
            self._resume(broken)
        self._read += len(data)
        if self._read > self._limit:
            raise SourceError(f"{self._url}: larger than maxBytes ({self._limit} bytes)")
        return data

    def _resume(self, broken: BaseException | None) -> None:
        expected = f" of {self._total}" if self._total is not None else ""
        what = f"the body ended after {self._read}{expected} bytes" + (f" ({broken!r})" if broken else "")
        if not (self._ranges and self._validator) or self._resumes >= RETRIES:
            raise SourceError(f"{self._url}: {what}; not keeping a truncated document", retryable=True)
        self._resumes += 1
        self._response.close()
        time.sleep(min(BACKOFF_SECONDS * 2 ** (self._resumes - 1), self._deadline.remaining()))
        headers = {**self._headers, "Range": f"bytes={self._read}-", "If-Range": self._validator}
        response = _fetch(self._opener, self._url, headers, self._deadline)
        if response.status != 206 or not response.headers.get("Content-Range", "").startswith(f"bytes {self._read}-"):
            response.close()
            raise SourceError(f"{self._url}: {what}, and the server did not resume it", retryable=True)
        self._response = response

    def close(self) -> None:
        self._response.close()

    def readable(self) -> bool:
        return True


@contextlib.contextmanager
def open_url(source: HttpSource, url: str) -> Iterator[IO[bytes]]:
    _check_scheme(url)
    headers = {"User-Agent": "llmtrain-ingest"}
    if source.auth_secret is not None:
        try:
            headers["Authorization"] = secrets.read_secret(source.auth_secret.name, source.auth_secret.key)
        except secrets.MissingSecret as exc:
            raise SourceError(str(exc)) from None
    with Deadline(url) as deadline:
        try:
            body = _Body(_opener(deadline), url, headers, deadline, source.max_bytes)
        except SourceError as exc:
            raise exc if str(exc).startswith(url) else SourceError(f"{url}: {exc}", exc.retryable) from None
        with contextlib.closing(body):
            yield body

"""Files over HTTP(S): streamed, size-limited, retried with exponential backoff.

Only http and https. Cloud metadata endpoints are not sources: link-local addresses (169.254.169.254,
fe80::/10, also written as IPv4-mapped IPv6), the unspecified address and the other providers' metadata
addresses are refused unless `LLMTRAIN_HTTP_ALLOW_LINK_LOCAL=1`; every redirect target is checked the same
way, and credentials never follow a redirect to another origin.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO
from urllib.parse import urlsplit

from ... import secrets
from ...api.datasource import HttpSource
from . import SourceError

#: metadata services outside link-local space (AWS over IPv6, Alibaba Cloud)
METADATA_ADDRESSES = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
RETRIES = 4
BACKOFF_SECONDS = 0.5
TIMEOUT_SECONDS = 30.0


def _check_host(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceError(f"{url}: only http and https URLs are fetched")
    if os.environ.get("LLMTRAIN_HTTP_ALLOW_LINK_LOCAL") == "1":
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname or "", parts.port or 80)}
    except socket.gaierror as exc:
        raise SourceError(f"{url}: cannot resolve host ({exc.strerror})", retryable=True) from exc
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_link_local or ip.is_unspecified or ip in METADATA_ADDRESSES:
            raise SourceError(
                f"{url}: refusing a link-local or metadata address ({address}); metadata endpoints are not"
                " sources (LLMTRAIN_HTTP_ALLOW_LINK_LOCAL=1 allows them)"
            )


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects go through the same host check; Authorization is dropped when the origin changes."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _check_host(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_CheckedRedirects)


class _Limited(IO[bytes]):
    """Reads through `response` and fails once more than `limit` bytes arrive."""

    def __init__(self, response: IO[bytes], url: str, limit: int) -> None:
        self._response, self._url, self._limit, self._read = response, url, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self._response.read(size if size >= 0 else self._limit + 1 - self._read)
        self._read += len(data)
        if self._read > self._limit:
            raise SourceError(f"{self._url}: larger than maxBytes ({self._limit} bytes)")
        return data

    def readable(self) -> bool:
        return True


@contextlib.contextmanager
def open_url(source: HttpSource, url: str) -> Iterator[IO[bytes]]:
    _check_host(url)
    headers = {"User-Agent": "llmtrain-ingest"}
    if source.auth_secret is not None:
        try:
            headers["Authorization"] = secrets.read_secret(source.auth_secret.name, source.auth_secret.key)
        except secrets.MissingSecret as exc:
            raise SourceError(str(exc)) from None
    request = urllib.request.Request(url, headers=headers)
    response = None
    for attempt in range(RETRIES + 1):
        try:
            response = _OPENER.open(request, timeout=TIMEOUT_SECONDS)
            break
        except urllib.error.HTTPError as exc:
            retryable = exc.code == 429 or exc.code >= 500
            if not retryable or attempt == RETRIES:
                raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}", retryable=retryable) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == RETRIES:
                reason = getattr(exc, "reason", exc)
                raise SourceError(f"{url}: {reason} after {RETRIES + 1} attempts", retryable=True) from None
        time.sleep(BACKOFF_SECONDS * 2**attempt)
    assert response is not None
    with response:
        yield _Limited(response, url, source.max_bytes)

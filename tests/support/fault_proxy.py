"""Fault injection in front of the real API server: what the emulator injected, as a small proxy.

`FaultProxy(upstream, ca, cert, key)` listens on 127.0.0.1 (plain HTTP, as the emulated server does) and
forwards every request to the real API server over TLS with the given client certificate, streaming watch
responses through. `faults` sets its rates: `conflict_rate` answers a write with 409 Conflict,
`error_rate` answers any request with 500, `latency` delays each request; `cut_watches()` closes every
open watch stream. The 410 Gone of an expired watch is not made up here: it comes from etcd compaction.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Faults:
    conflict_rate: float = 0.0
    error_rate: float = 0.0
    latency: float = 0.0


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}
    return web.Response(status=code, text=json.dumps({**body, "code": code}), content_type="application/json")


class FaultProxy:
    def __init__(self, upstream: str, ca: Path, cert: Path, key: Path, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(cert), str(key))
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.injected = {"409": 0, "500": 0, "cut": 0}
        self.watches: set[web.StreamResponse] = set()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        self.ready.wait(10)
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.stopped = asyncio.Event()
        self.ready.set()
        await self.stopped.wait()
        await self._cut()
        await self.session.close()
        await self.runner.cleanup()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(10)

    def cut_watches(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self.loop).result(10)

    async def _cut(self) -> None:
        for response in list(self.watches):
            self.injected["cut"] += 1
            if response.task is not None:
                response.task.cancel()  # the handler stops; the client sees the stream end
        self.watches.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        if faults.latency:
            await asyncio.sleep(faults.latency)
        if request.method in WRITES and self.rng.random() < faults.conflict_rate:
            self.injected["409"] += 1
            return _status(409, "Conflict", "injected conflict: the object has been modified")
        if self.rng.random() < faults.error_rate:
            self.injected["500"] += 1
            return _status(500, "InternalError", "injected server error")
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept", "user-agent")}
        body = await request.read()
        upstream = await self.session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers, ssl=self.context
        )
        if request.query.get("watch") in ("true", "1"):
            return await self._stream(request, upstream)
        async with upstream:
            payload = await upstream.read()
        kept = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "warning")}
        return web.Response(status=upstream.status, body=payload, headers=kept)

    async def _stream(self, request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status)
        response.content_type = upstream.content_type
        await response.prepare(request)
        self.watches.add(response)
        try:
            async with upstream:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
        finally:
            self.watches.discard(response)
        return response

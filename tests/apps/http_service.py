"""A real local HTTP service for async-operator tests and the benchmark (aiohttp, 127.0.0.1, free port).

``GET /enrich?v=<value>`` answers ``<value>:ok`` after a random latency in ``[latency_min, latency_max]``
seconds; with probability ``fail_rate`` it answers 500 instead (an injected failure). The server
counts requests and the most requests it held at once (``max_in_flight``).

In a thread of the test process: ``with HttpService(...) as svc: svc.url``. As a process (the
benchmark, so that it does not compete for the caller's GIL):
``python -m tests.apps.http_service --latency 0.01`` prints ``PORT <n>`` and serves until killed;
``--lean`` serves the same endpoint from a stdlib asyncio protocol (HTTP/1.1 keep-alive, a few
microseconds per request) so that a benchmark measures the caller, not the server's framework.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
from typing import Any

from aiohttp import web


class HttpService:
    def __init__(self, latency_min: float = 0.0, latency_max: float = 0.0, fail_rate: float = 0.0,
                 seed: int | None = None) -> None:
        self.latency_min, self.latency_max, self.fail_rate = latency_min, latency_max, fail_rate
        self.random = random.Random(seed)
        self.requests = 0
        self.failures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/enrich"

    async def _enrich(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.random.uniform(self.latency_min, self.latency_max)
            if delay > 0:
                await asyncio.sleep(delay)
            if self.fail_rate and self.random.random() < self.fail_rate:
                self.failures += 1
                return web.Response(status=500, text="injected failure")
            return web.Response(text=f"{request.query.get('v', '')}:ok")
        finally:
            self.in_flight -= 1

    async def start_async(self, port: int = 0) -> int:
        app = web.Application()
        app.router.add_get("/enrich", self._enrich)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    def start(self) -> "HttpService":
        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            loop.run_until_complete(self.start_async())
            self._started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
            loop.close()

        self._thread = threading.Thread(target=run, name="http-service", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the HTTP service did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> "HttpService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _LeanProtocol(asyncio.Protocol):
    """``GET /enrich?v=<value>`` → ``<value>:ok`` after ``latency`` s; keep-alive, pipelining-safe."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        loop = asyncio.get_running_loop()
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            target = head.split(b" ", 2)[1]
            v = target.partition(b"v=")[2].split(b"&", 1)[0]
            loop.call_later(self.latency, self._answer, v + b":ok")

    def _answer(self, body: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                                 % (len(body), body))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--latency", type=float, default=0.01, help="seconds (fixed latency)")
    p.add_argument("--jitter", type=float, default=0.0, help="extra random seconds")
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--lean", action="store_true", help="stdlib asyncio protocol (fixed latency, no failures)")
    a = p.parse_args()
    loop = asyncio.new_event_loop()
    if a.lean:
        server = loop.run_until_complete(loop.create_server(lambda: _LeanProtocol(a.latency), "127.0.0.1", a.port,
                                                            backlog=1024))
        port = server.sockets[0].getsockname()[1]
    else:
        svc = HttpService(a.latency, a.latency + a.jitter, a.fail_rate)
        port = loop.run_until_complete(svc.start_async(a.port))
    print(f"PORT {port}", flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

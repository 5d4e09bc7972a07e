"""A tiny HTTP server for Kubernetes probes and Prometheus: ``/healthz``, ``/readyz``, ``/metrics``.

Stdlib only (``http.server.ThreadingHTTPServer``) plus prometheus-client's exposition, so
it adds no dependency and no event loop to the member process. It serves from a daemon
thread: it never keeps a finishing process alive, and a slow scrape never blocks the
processing loop (each request gets its own short-lived thread).

=============  ======================================================================
``/healthz``   200 ``ok`` when ``health()`` is true, else 503 (liveness probe)
``/readyz``    200 ``ready`` when ``ready()`` is true, else 503 (readiness probe)
``/metrics``   Prometheus text format of the registry (default: the process registry)
``/stores...`` interactive queries, ``/metadata...`` which instance owns what (JSON; only when the
               member passes a ``queries`` handler: kstreamlet/query/service.py, docs/operations.md)
anything else  404
=============  ======================================================================

``/stores`` and ``/metadata`` expose state: each request passes :class:`~kstreamlet.observability.access.HttpAccess`
first (bearer token, client certificate, or loopback only; 401/403 with a one-line reason otherwise).
With a certificate the port speaks HTTPS; the TLS handshake runs on the request's own thread, so
a client that never finishes it cannot stall the others. Error pages carry a fixed text or the
route's own one-line message: never a setting's value, a token or a stored value.

A check that raises counts as false (503), so a bug in a check can never crash the
server thread or turn a probe green.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from kstreamlet.observability.access import HttpAccess, is_protected

log = structlog.get_logger("kstreamlet.http")

Check = Callable[[], bool]
#: ``queries(path, query_string, headers) -> (status, extra headers, JSON body)``: the interactive
#: query routes (kstreamlet/query/service.py); it never raises for a bad request (4xx/503 instead).
QueryHandler = Callable[[str, str, dict[str, str]], tuple[int, dict[str, str], bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: "ObservabilityServer"
    # A client that connects and sends nothing must not pin a thread forever.
    timeout = 10
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()  # applies `timeout` to the connection
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, on the request's thread (not in accept())

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._respond(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        path = url.path
        extra: dict[str, str] = {}
        queries = self.server.queries
        refused = self._refusal(path) if queries is not None else None
        if refused is not None:
            code, message = refused
            status, ctype = HTTPStatus(code), "application/json"
            body = json.dumps({"error": message}).encode()
            if code == 401:
                extra = {"WWW-Authenticate": 'Bearer realm="kstreamlet"'}
        elif queries is not None and is_protected(path):
            try:
                code, extra, body = queries(path, url.query, dict(self.headers.items()))
                status, ctype = HTTPStatus(code), "application/json"
            except Exception as e:  # a bug in a route: say so instead of dropping the connection
                log.warning("query failed", path=path, error=repr(e))
                status, ctype, body = HTTPStatus.INTERNAL_SERVER_ERROR, "application/json", \
                    b'{"error": "internal error"}'
        elif path == "/healthz":
            status, ctype, body = self._check(self.server.health, b"ok\n", b"unhealthy\n")
        elif path == "/readyz":
            status, ctype, body = self._check(self.server.ready, b"ready\n", b"not ready\n")
        elif path == "/metrics":
            try:
                status, ctype, body = HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.server.registry)
            except Exception as e:  # a broken custom collector: say so instead of dropping the connection
                log.warning("metrics collection failed", error=repr(e))
                status, ctype, body = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"metrics failed\n"
        else:
            status, ctype, body = HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        # Probe answers and metrics are point-in-time; no proxy may serve a stale one.
        self.send_header("Cache-Control", "no-store")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _refusal(self, path: str) -> tuple[int, str] | None:
        if not is_protected(path):
            return None
        peer: Any = None
        if isinstance(self.connection, ssl.SSLSocket):
            peer = self.connection.getpeercert()
        return self.server.access.refusal(str(self.client_address[0]), dict(self.headers.items()), peer)

    @staticmethod
    def _check(fn: Check, ok: bytes, bad: bytes) -> tuple[HTTPStatus, str, bytes]:
        try:
            passed = bool(fn())
        except Exception as e:
            log.warning("health check raised; reporting failure", check=getattr(fn, "__name__", repr(fn)), error=repr(e))
            passed = False
        return (HTTPStatus.OK if passed else HTTPStatus.SERVICE_UNAVAILABLE), "text/plain; charset=utf-8", (ok if passed else bad)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        # Probes hit every few seconds and scrapes every 15-30s: access lines would drown
        # the service's own logs. Errors that matter are logged where they happen.
        pass


class ObservabilityServer(ThreadingHTTPServer):
    """The running endpoint. ``.port`` is the bound port (useful with port 0); ``.shutdown()`` stops it."""

    daemon_threads = True  # request threads never delay process exit
    allow_reuse_address = True  # a restarted process rebinds at once despite TIME_WAIT sockets
    # socketserver's default backlog of 5 drops SYNs when a scrape and probes coincide with a
    # few keep-alive clients; a dropped SYN costs the client a 1 s retransmit.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], health: Check, ready: Check, registry: CollectorRegistry,
                 queries: QueryHandler | None = None, access: HttpAccess | None = None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        #: Who may call /stores and /metadata, and the port's TLS (observability/access.py).
        self.access = access or HttpAccess()
        self._tls = self.access.server_context()  # before binding: a bad certificate fails first
        super().__init__(address, _Handler)
        self.health = health
        self.ready = ready
        self.registry = registry
        #: Interactive query routes (None: /stores and /metadata are 404); may be set after start.
        self.queries = queries
        self._thread: threading.Thread | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self._tls is not None:  # the handshake happens in the handler's setup(), on its thread
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a client gone mid-request: one debug line, not a traceback on stderr.
        log.debug("http request failed", client=str(client_address[0]), error=repr(sys.exc_info()[1]))

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        addr = self.server_address[0]
        host = addr.decode() if isinstance(addr, bytes) else str(addr)
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        scheme = self.access.scheme
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    def _start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"kstreamlet-http-{self.port}", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving, close the listening socket and join the thread. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None and self._thread.is_alive():
            super().shutdown()  # returns once serve_forever notices (within one 0.1 s poll)
            self._thread.join(timeout=5)
        self.server_close()


def start_http_server(
    port: int,
    health: Check,
    ready: Check,
    host: str = "0.0.0.0",
    registry: CollectorRegistry = REGISTRY,
    queries: QueryHandler | None = None,
    access: HttpAccess | None = None,
) -> ObservabilityServer:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` from a daemon thread.

    Args:
        port: TCP port; 0 picks a free one (read it back from ``server.port``).
        health: liveness check, e.g. a :class:`~kstreamlet.observability.health.Heartbeat`.
        ready: readiness check, e.g. ``member.ready.is_set``.
        host: bind address; the default serves the pod IP (kubelet and Prometheus connect from outside).
        registry: metrics registry to expose; the process-wide default holds ``kstreamlet.metrics``.
        queries: the interactive query routes ``/stores...`` and ``/metadata...`` (kstreamlet/query).
        access: who may call those routes, and the port's TLS (default: plain HTTP, loopback only).

    Raises:
        OSError: the port is taken; raised here, at start, rather than lost in a thread.
        ConfigError: the TLS certificate, key or CA cannot be loaded (naming the setting).
    """
    server = ObservabilityServer((host, port), health, ready, registry, queries, access)
    server._start()
    log.debug("http endpoint listening", host=host, port=server.port)
    return server

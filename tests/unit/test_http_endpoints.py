"""The /healthz, /readyz and /metrics endpoint, over real HTTP on loopback (port 0)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from kstreamlet import metrics
from kstreamlet.observability import Heartbeat, start_http_server, worker_http_port


class Flag:
    """A settable check, to flip health/readiness while the server runs."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __call__(self) -> bool:
        return self.value


def get(server, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def serve():
    """Start servers on 127.0.0.1:0 and always shut them down."""
    started = []

    def start(health=lambda: True, ready=lambda: True, **kw):
        kw.setdefault("host", "127.0.0.1")
        server = start_http_server(0, health=health, ready=ready, **kw)
        started.append(server)
        return server

    yield start
    for s in started:
        s.shutdown()


def test_port_zero_binds_an_ephemeral_port_exposed_as_port(serve):
    server = serve()
    assert isinstance(server.port, int) and server.port > 0, f"expected a real bound port, saw {server.port!r}"
    status, _, _ = get(server, "/healthz")
    assert status == 200, f"expected the server to answer on .port, saw status {status}"


def test_healthz_follows_the_health_check(serve):
    health = Flag(True)
    server = serve(health=health)
    status, headers, body = get(server, "/healthz")
    assert (status, body) == (200, b"ok\n"), f"healthy: expected 200 'ok', saw {status} {body!r}"
    assert headers["content-type"].startswith("text/plain"), headers
    health.value = False
    status, _, body = get(server, "/healthz")
    assert status == 503, f"unhealthy: expected 503, saw {status} {body!r}"


def test_readyz_follows_the_ready_check_like_a_member_ready_event(serve):
    ready = threading.Event()  # what Member.ready is
    server = serve(ready=ready.is_set)
    status, _, body = get(server, "/readyz")
    assert status == 503, f"before assignment/restore: expected 503, saw {status} {body!r}"
    ready.set()
    status, _, body = get(server, "/readyz")
    assert (status, body) == (200, b"ready\n"), f"after ready.set(): expected 200 'ready', saw {status} {body!r}"


def test_liveness_and_readiness_are_independent(serve):
    server = serve(health=lambda: True, ready=lambda: False)
    assert get(server, "/healthz")[0] == 200, "a live but unassigned member must not be restarted"
    assert get(server, "/readyz")[0] == 503, "a live but unassigned member is not ready"


def test_a_check_that_raises_reports_503_and_the_server_keeps_serving(serve):
    def broken() -> bool:
        raise RuntimeError("boom")

    server = serve(health=broken, ready=broken)
    for path in ("/healthz", "/readyz"):
        status, _, _ = get(server, path)
        assert status == 503, f"{path} with a raising check: expected 503, saw {status}"
    status, _, _ = get(server, "/metrics")
    assert status == 200, f"the server must survive raising checks; /metrics answered {status}"


def test_metrics_serves_the_default_registry_with_kstreamlet_metrics(serve):
    metrics.CHECKPOINTS.inc()
    server = serve()
    status, headers, body = get(server, "/metrics")
    assert status == 200, f"expected 200, saw {status}"
    assert headers["content-type"] == CONTENT_TYPE_LATEST, f"expected {CONTENT_TYPE_LATEST!r}, saw {headers['content-type']!r}"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert "kstreamlet_checkpoints" in families, f"kstreamlet metrics missing from /metrics; saw {sorted(families)[:20]}"
    value = next(s.value for s in families["kstreamlet_checkpoints"].samples if s.name == "kstreamlet_checkpoints_total")
    assert value >= 1, f"expected the incremented checkpoint counter (>= 1), saw {value}"


def test_metrics_can_serve_a_private_registry(serve):
    registry = CollectorRegistry()
    Counter("only_here_total", "a counter in a private registry", registry=registry).inc(3)
    server = serve(registry=registry)
    _, _, body = get(server, "/metrics")
    text = body.decode()
    assert "only_here_total 3.0" in text, f"expected the private counter, saw:\n{text}"
    assert "kstreamlet_checkpoints_total" not in text, "a private registry must not include the process registry"


def test_unknown_paths_are_404_and_query_strings_are_ignored(serve):
    server = serve()
    for path in ("/", "/health", "/metrics/extra", "/readyz/"):
        status, _, _ = get(server, path)
        assert status == 404, f"{path}: expected 404, saw {status}"
    status, _, _ = get(server, "/healthz?verbose=1")
    assert status == 200, f"/healthz?verbose=1: expected the query string ignored (200), saw {status}"


def test_head_answers_like_get_without_a_body(serve):
    server = serve()
    status, headers, body = get(server, "/healthz", method="HEAD")
    assert (status, body) == (200, b""), f"HEAD /healthz: expected 200 with no body, saw {status} {body!r}"
    assert headers["content-length"] == "3", f"HEAD keeps GET's Content-Length; saw {headers['content-length']!r}"


def test_urllib_healthcheck_as_used_by_the_docker_image(serve):
    """The Dockerfile's HEALTHCHECK does exactly this: urlopen, non-200 raises → exit 1."""
    health = Flag(True)
    server = serve(health=health)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2) as r:
        assert r.status == 200, f"expected 200, saw {r.status}"
    health.value = False
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2)
    assert err.value.code == 503, f"expected HTTPError 503, saw {err.value.code}"


def test_concurrent_requests_are_all_answered(serve):
    server = serve()
    results: list[int] = []
    lock = threading.Lock()

    def hit() -> None:
        for path in ("/healthz", "/readyz", "/metrics"):
            status = get(server, path)[0]
            with lock:
                results.append(status)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [200] * 24, f"expected 24 answers of 200, saw {results}"


def test_a_silent_client_does_not_block_other_requests(serve):
    server = serve()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # connects, sends nothing
    try:
        t0 = time.monotonic()
        status = get(server, "/healthz")[0]
        took = time.monotonic() - t0
        assert status == 200 and took < 2, f"expected a prompt 200 beside an idle client, saw {status} after {took:.2f}s"
    finally:
        idle.close()


def test_shutdown_stops_serving_and_frees_the_port(serve):
    server = start_http_server(0, health=lambda: True, ready=lambda: True, host="127.0.0.1")
    port = server.port
    assert get(server, "/healthz")[0] == 200
    t0 = time.monotonic()
    server.shutdown()
    took = time.monotonic() - t0
    assert took < 3, f"shutdown should take at most a poll interval, took {took:.2f}s"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.shutdown()  # idempotent: a second call neither raises nor hangs
    again = start_http_server(port, health=lambda: True, ready=lambda: True, host="127.0.0.1")
    try:
        assert again.port == port, f"expected to rebind freed port {port}, bound {again.port}"
    finally:
        again.shutdown()


def test_a_taken_port_fails_at_start_not_in_a_thread(serve):
    server = serve()
    with pytest.raises(OSError):
        start_http_server(server.port, health=lambda: True, ready=lambda: True, host="127.0.0.1")


def test_serving_thread_is_a_daemon(serve):
    server = serve()
    threads = [t for t in threading.enumerate() if t.name == f"kstreamlet-http-{server.port}"]
    assert len(threads) == 1 and threads[0].daemon, f"expected one daemon serving thread, saw {threads}"


def test_requests_are_not_access_logged(serve, capsys):
    server = serve()
    for _ in range(3):
        get(server, "/healthz")
    captured = capsys.readouterr()
    assert "GET /healthz" not in captured.err + captured.out, f"probe requests were logged:\n{captured.err}"


# --- Heartbeat and the per-worker port ------------------------------------------------------------


def test_heartbeat_is_healthy_until_silent_longer_than_max_silence():
    now = [100.0]
    hb = Heartbeat(max_silence=30, clock=lambda: now[0])
    assert hb(), "a new heartbeat is healthy (start-up must not fail liveness)"
    now[0] += 30
    assert hb(), "exactly max_silence after the last beat is still healthy"
    now[0] += 0.5
    assert not hb(), f"silent for {hb.silence}s > 30s: expected unhealthy"
    hb.beat()
    assert hb() and hb.silence == 0, f"a beat makes it healthy again; silence={hb.silence}"


def test_heartbeat_drives_healthz(serve):
    now = [0.0]
    hb = Heartbeat(max_silence=5, clock=lambda: now[0])
    server = serve(health=hb)
    assert get(server, "/healthz")[0] == 200
    now[0] = 6.0
    assert get(server, "/healthz")[0] == 503, "a loop silent for 6s > 5s must fail liveness"


def test_heartbeat_rejects_non_positive_max_silence():
    with pytest.raises(ValueError):
        Heartbeat(max_silence=0)


@pytest.mark.parametrize(("base", "env", "expected"), [
    (8080, {}, 8080),
    (8080, {"KSTREAMLET_WORKER_INDEX": "0"}, 8080),
    (8080, {"KSTREAMLET_WORKER_INDEX": "2"}, 8082),
    (0, {"KSTREAMLET_WORKER_INDEX": "3"}, 0),
])
def test_worker_http_port_offsets_forked_workers(base, env, expected):
    got = worker_http_port(base, env)
    assert got == expected, f"base {base} with {env}: expected port {expected}, saw {got}"


def test_worker_http_port_refuses_ports_past_65535():
    with pytest.raises(ValueError):
        worker_http_port(65535, {"KSTREAMLET_WORKER_INDEX": "1"})

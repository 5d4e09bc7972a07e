"""Async enrichment throughput: ``map_async`` against a real HTTP service under exactly-once.

``python -m bench.async_enrich [--bootstrap host:port] [--records 30000] [--latency 0.01]
[--concurrency 64] [--partitions 1]``

The service answers each ``GET /enrich?v=..`` after ``--latency`` seconds, in its own process on
127.0.0.1: ``--service go`` (default when ``go`` is on PATH: bench/http_service_go, built once)
or ``--service python`` (tests/apps/http_service.py; ``--client lean`` its stdlib asyncio
server, ``--client aiohttp`` the aiohttp one). ``--client lean`` (default) calls it with a minimal
keep-alive client (what is measured is the operator), ``--client aiohttp`` with aiohttp (a
library's per-request CPU included). One member (in this process) reads a
``--partitions``-partition input (one task per partition, ``--concurrency`` calls in flight per
task), calls the service for every record and writes the answer, EOS with 100 ms
checkpoints. Timed from the member's first record to the last committed output (read back
``read_committed``; every output must be there exactly once). Before it, in the same
invocation, a bare asyncio program makes the same calls at the same concurrency (no Kafka):
``fraction_of_raw_asyncio`` is the operator's rate over that baseline's. The bound is
partitions x concurrency / latency; the target is 80 % of it. Without ``--bootstrap`` a local
broker is started (kstreamlet.dev.kafka). Not a test: it prints a JSON line with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


GO_SERVICE = ROOT / "bench" / "http_service_go"


def _go_service_binary() -> Path:
    """Build (once; cached under ~/.cache/kstreamlet-bench) the Go fixed-latency service."""
    out = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kstreamlet-bench" / "http_service_go"
    src = GO_SERVICE / "main.go"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(out), "."], cwd=GO_SERVICE, check=True)
    return out


def _start_service(latency: float, lean: bool, kind: str = "python") -> tuple[subprocess.Popen[bytes], int]:
    if kind == "go":
        cmd = [str(_go_service_binary()), f"{latency * 1000:g}ms"]
    else:
        cmd = [sys.executable, "-m", "tests.apps.http_service", "--latency", str(latency)] + (["--lean"] if lean else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the HTTP service did not start: {line!r}")
    return proc, int(line.split()[1])


class LeanClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (a pool of connections per event
    loop): ``await get(path)`` → body. The benchmark's client, so that what is measured is the
    operator, not a client library's per-request cost (``--client aiohttp`` measures that one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> bytes:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = conn
        writer.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        body = await reader.readexactly(length)
        self.idle.append(conn)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:100]!r}")
        return body


def raw_baseline(port: int, n: int, concurrency: int, loop: str) -> dict[str, float]:
    """The same calls from a bare asyncio program (a semaphore of ``concurrency``, no Kafka, no
    kstreamlet) against the same service: what Python's event loop and this client reach on this
    machine now — the baseline the operator's rate is divided by."""
    async def main() -> tuple[float, float]:
        client = LeanClient(port)
        sem = asyncio.Semaphore(concurrency)
        seen = [0.0]

        async def one(i: int) -> None:
            async with sem:
                t = time.monotonic()
                await client.get(f"/enrich?v={i}")
                seen[0] += time.monotonic() - t

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.monotonic() - t0, seen[0] / n

    if loop == "uvloop":
        import uvloop

        elapsed, lat = uvloop.run(main())
    else:
        elapsed, lat = asyncio.run(main())
    return {"records_per_s": n / elapsed, "call_latency_ms_mean": 1000 * lat}


def _load(bootstrap: str, topic: str, n: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for i in range(n):
        while True:
            try:
                p.produce(topic, str(i).encode(), str(i).encode())
                break
            except BufferError:
                p.poll(0.01)
    p.flush(60)


def _count_committed(bootstrap: str, topic: str, partitions: int, n: int, timeout: float) -> tuple[float | None, int]:
    """(wall time the n-th distinct output arrived, records read) — read_committed, from the start."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-verify-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen: set[bytes] = set()
    total = 0
    done_at = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = [m for m in c.consume(10000, 0.2) if m.error() is None]
            for m in got:
                seen.add(m.value())
            total += len(got)
            if done_at is None and len(seen) >= n:
                done_at = time.monotonic()
            if done_at is not None and not got and time.monotonic() - done_at > 2:
                break
    finally:
        c.close()
    return done_at, total


def run(bootstrap: str, a: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    from kstreamlet import App, serdes
    from kstreamlet.runtime.member import Member
    from kstreamlet.runtime.topics import create_topics

    from confluent_kafka.admin import AdminClient

    tag = uuid.uuid4().hex[:6]
    inp, out = f"bench-async-in-{tag}", f"bench-async-out-{tag}"
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), {inp: a.partitions, out: a.partitions})
    _load(bootstrap, inp, a.records)
    svc, port = _start_service(a.latency, lean=a.client == "lean", kind=a.service)
    raw = raw_baseline(port, min(a.records, 20_000), a.concurrency * a.partitions, a.loop) \
        if a.client == "lean" else None
    url = f"http://127.0.0.1:{port}/enrich"
    lean: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeanClient]" = weakref.WeakKeyDictionary()
    sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]" = weakref.WeakKeyDictionary()

    calls = [0, 0.0]  # calls, seconds in them (the latency the operator actually saw)

    async def enrich_lean(v: str) -> str:
        loop = asyncio.get_running_loop()
        c = lean.get(loop)
        if c is None:
            c = lean[loop] = LeanClient(port)
        t0 = time.monotonic()
        body = await c.get(f"/enrich?v={v}")
        calls[0] += 1
        calls[1] += time.monotonic() - t0
        return body.decode()

    async def enrich(v: str) -> str:
        loop = asyncio.get_running_loop()
        s = sessions.get(loop)
        if s is None:
            s = sessions[loop] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with s.get(url, params={"v": v}) as resp:
            resp.raise_for_status()
            return await resp.text()

    app = App(application_id=f"bench-async-{tag}", bootstrap_servers=bootstrap, commit_interval=a.commit_interval,
              processing_guarantee="exactly_once", state_backend="memory", log_level="warning",
              async_event_loop=a.loop)
    (app.stream(inp, value_serde=serdes.STR)
        .map_async(enrich_lean if a.client == "lean" else enrich, concurrency=a.concurrency, timeout=5.0, retries=3,
                   ordered=not a.unordered)
        .to(out, value_serde=serdes.STR))
    commits = [0, 0.0]

    class Checkpoints:
        def on_commit(self, member: Any, seconds: float) -> None:
            commits[0] += 1
            commits[1] += seconds

        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    member = Member(app, f"bench-{tag}", install_signal_handlers=False, listeners=[Checkpoints()])  # type: ignore[list-item]
    t = threading.Thread(target=member.run, daemon=True)
    cpu0 = time.process_time()
    t.start()
    try:
        done_at, total = _count_committed(bootstrap, out, a.partitions, a.records, timeout=a.timeout)
    finally:
        member.stop()
        t.join(60)
        svc.kill()
        svc.wait(10)
    cpu = time.process_time() - cpu0
    started = member.first_record_at
    if done_at is None or started is None:
        raise SystemExit(f"not every output arrived within {a.timeout}s (read {total})")
    elapsed = done_at - started
    rate = a.records / elapsed
    bound = a.partitions * a.concurrency / a.latency
    return {"scenario": "async_enrich", "records": a.records, "partitions": a.partitions,
            "concurrency": a.concurrency, "latency_s": a.latency, "guarantee": "exactly_once",
            "commit_interval_s": a.commit_interval, "checkpoints": commits[0],
            "checkpoint_ms_mean": round(1000 * commits[1] / max(1, commits[0]), 1), "event_loop": a.loop, "client": a.client, "ordered": not a.unordered, "seconds": round(elapsed, 3),
            "records_per_s": round(rate), "bound_per_s": round(bound), "fraction_of_bound": round(rate / bound, 3),
            "target_met": rate >= 0.8 * bound,
            "call_latency_ms_mean": round(1000 * calls[1] / calls[0], 2) if calls[0] else None,
            "fraction_of_observed_bound": round(rate * calls[1] / calls[0] / (a.partitions * a.concurrency), 3)
            if calls[0] else None, "outputs_read": total, "exactly_once": total == a.records,
            "process_cpu_s": round(cpu, 2), "service": a.service,
            "raw_asyncio_records_per_s": round(raw["records_per_s"]) if raw else None,
            "raw_asyncio_call_latency_ms": round(raw["call_latency_ms_mean"], 2) if raw else None,
            "fraction_of_raw_asyncio": round(rate / raw["records_per_s"], 3) if raw else None,
            "load_average": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.async_enrich", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("KSTREAMLET_BOOTSTRAP_SERVERS"))
    p.add_argument("--records", type=int, default=30_000)
    p.add_argument("--latency", type=float, default=0.01)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--unordered", action="store_true", help="ordered=False (completion order)")
    p.add_argument("--commit-interval", type=float, default=0.1, help="seconds between checkpoints (EOS)")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--service", choices=("go", "python"), default="go" if shutil.which("go") else "python",
                   help="the 10 ms service: go (bench/http_service_go, built once; default when `go` is on PATH) "
                        "or python (tests/apps/http_service.py, which adds 2-3 ms on a loaded 2-core machine)")
    p.add_argument("--client", choices=("lean", "aiohttp"), default="lean",
                   help="lean: stdlib asyncio keep-alive client + server; aiohttp: aiohttp client + server")
    a = p.parse_args(argv)
    if a.bootstrap:
        result = run(a.bootstrap, a)
    else:
        from kstreamlet.dev.kafka import kafka_broker

        with kafka_broker() as broker:
            result = run(broker.bootstrap_servers, a)
    print(json.dumps(result))
    return 0 if result["target_met"] and result["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())

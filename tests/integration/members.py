"""Helpers for tests that run kstreamlet services as real processes (stand-ins for pods)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[2]


class Members:
    """Starts, kills and restarts member processes of one app; collects their JSON logs."""

    def __init__(self, app_spec: str, env: dict[str, str], log_dir: Path) -> None:
        self.app_spec = app_spec
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = collections.Counter()

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        self.starts[name] += 1
        log = open(self.log_dir / f"{name}-{self.starts[name]}.log", "wb")
        env = {**self.env, "KSTREAMLET_INSTANCE_ID": name, **(extra_env or {})}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "kstreamlet.cli", "run", self.app_spec],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )

    def kill9(self, name: str) -> None:
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def pause(self, name: str) -> None:
        """SIGSTOP: the member is frozen (a long GC pause, a stalled VM), a zombie once resumed."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def terminate(self, name: str, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        p = self.procs.pop(name)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout)
        return rc, time.monotonic() - t0

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for name in list(self.procs):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a frozen member cannot handle SIGTERM
                p.send_signal(signal.SIGTERM)
        for name, p in list(self.procs.items()):
            try:
                codes[name] = p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait(10)
        self.procs.clear()
        return codes

    def events(self, name: str, event: str, incarnation: int | None = None) -> list[dict]:
        """The ``event`` log records of member ``name``: of every start (``incarnation`` None), of
        its ``incarnation``-th start (1 = the first), or of its latest (-1)."""
        logs = sorted(self.log_dir.glob(f"{name}-*.log"), key=lambda f: int(f.stem.rsplit("-", 1)[1]))
        if incarnation == -1:
            logs = logs[-1:]
        elif incarnation is not None:
            logs = [f for f in logs if f.stem == f"{name}-{incarnation}"]
        out = []
        for f in logs:
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("{") and f'"{event}"' in line:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("event") == event:
                        out.append(rec)
        return out

    def wait_event(self, name: str, event: str, timeout: float) -> list[dict]:
        """The ``event`` log records of member ``name``, waiting up to ``timeout`` s for the first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.events(name, event)
            if ev:
                return ev
            time.sleep(0.2)
        raise AssertionError(f"expected {name} to log {event!r} within {timeout}s\n{self.log_tail()}")

    def wait_exit(self, name: str, timeout: float) -> int:
        """Exit code of member ``name``, which is expected to exit by itself (an injected crash)."""
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{name} did not exit within {timeout}s (expected an injected crash)\n{self.log_tail()}") from None

    def grep(self, needle: str, limit: int = 20) -> str:
        """Lines containing ``needle`` across the members' logs (``file: line``), at most ``limit``."""
        hits = []
        for f in sorted(self.log_dir.glob("*.log")):
            hits += [f"{f.name}: {line}" for line in f.read_text(errors="replace").splitlines() if needle in line]
        return "\n".join(hits[:limit]) + (f"\n... {len(hits) - limit} more" if len(hits) > limit else "")

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for f in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)


class Feeder(threading.Thread):
    """Produces ``values`` to ``topic`` at about ``rate`` records/s (keys = values)."""

    def __init__(self, bootstrap: str, topic: str, values: Iterable[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10, "enable.idempotence": True})
        self.topic, self.values, self.rate = topic, list(values), rate
        self.sent = 0

    def run(self) -> None:
        t0 = time.monotonic()
        for i, v in enumerate(self.values):
            # A str is both key and value; a (key, value) tuple gives them separately.
            k, b = (v[0].encode(), v[1].encode()) if isinstance(v, tuple) else (v.encode(), v.encode())
            while True:
                try:
                    self.producer.produce(self.topic, b, k)
                    break
                except BufferError:
                    self.producer.poll(0.01)
            self.sent = i + 1
            if i % 500 == 0:
                self.producer.poll(0)
                ahead = (i / self.rate) - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        self.producer.flush(60)


def read_committed(bootstrap: str, topic: str, expect: int, timeout: float, settle: float = 3.0,
                   with_headers: bool = False, with_keys: bool = False) -> list:
    """Read ``topic`` from the start with read_committed until ``expect`` records arrived and
    nothing more came for ``settle`` seconds (so duplicates would show), or until timeout.
    Values; ``(value, headers)`` with ``with_headers``; ``(key, value)`` with ``with_keys``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = c.consume(5000, 0.5)
            got = [m for m in msgs if m.error() is None]
            if got:
                quiet_since = time.monotonic()
                out.extend((m.value(), m.headers()) if with_headers else (m.key(), m.value()) if with_keys
                           else m.value() for m in got)
            elif len(out) >= expect and time.monotonic() - quiet_since >= settle:
                break
    finally:
        c.close()
    return out


class RunningMember:
    """A member running in a thread of the test process (in-process state such as a mock schema
    registry is shared with the test)."""

    def __init__(self, app: Any) -> None:
        from kstreamlet.runtime.member import Member

        self.member = Member(app, f"t-{uuid.uuid4().hex[:6]}", install_signal_handlers=False)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.member.run()
        except BaseException as e:
            self.error = e

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.member.ready.wait(timeout), "member got no partitions in time"

    def stop(self) -> None:
        self.member.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "member did not stop"
        if self.error:
            raise self.error


def multiset_diff(expected: Iterable, seen: Iterable) -> tuple[collections.Counter, collections.Counter]:
    """(missing, duplicated-or-unexpected) between two multisets."""
    e, s = collections.Counter(expected), collections.Counter(seen)
    return e - s, s - e


class OutputWatch(threading.Thread):
    """Reads every partition of ``topic`` from the start (``read_committed``, no group, so it
    rides out broker outages by itself) and notes when each record arrived, so a test can
    tell the time from a fault's end to the first new output and check every value."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex}",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "log_level": 0})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.records: list[tuple[float, bytes | None, bytes | None]] = []
        self._done = threading.Event()

    def run(self) -> None:
        try:
            while not self._done.is_set():
                now = time.monotonic()
                for m in self.consumer.consume(5000, 0.2):
                    if m.error() is None:
                        self.records.append((now, m.key(), m.value()))
        finally:
            self.consumer.close()

    def values(self) -> list[bytes | None]:
        return [v for _, _, v in self.records]

    def first_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the first record that arrived after it (None: none did)."""
        later = [at for at, _, _ in self.records if at > t]
        return round(min(later) - t, 2) if later else None

    def longest_stall_after(self, t: float) -> float | None:
        """Longest gap between outputs from ``t`` on (``t`` to the first output included): how
        long the pipeline stood still around a fault that started at ``t``."""
        later = sorted(at for at, _, _ in self.records if at > t)
        if not later:
            return None
        return round(max(b - a for a, b in zip([t] + later, later)), 2)

    def wait_quiet(self, expect: int, timeout: float, settle: float = 3.0) -> None:
        """Until ``expect`` records arrived and nothing more for ``settle`` s (so duplicates show), or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = len(self.records)
            last = self.records[-1][0] if self.records else 0.0
            if n >= expect and time.monotonic() - last >= settle:
                return
            time.sleep(0.2)

    def stop(self) -> None:
        self._done.set()
        self.join(30)


def hanging_transactions(bootstrap: str, prefixes: list[str], settle: float = 35.0) -> list[str]:
    """Partitions of the topics starting with one of ``prefixes`` whose last stable offset stays
    below the high watermark for ``settle`` seconds once nothing produces to them any more: a
    transaction that is neither committed nor aborted there. With every producer stopped, the
    coordinator aborts a transaction that is merely open within the transaction timeout (10 s
    here, checked every 10 s), so what stays is a transaction the broker left *hanging* — e.g. a
    single broker restarted after kill -9 whose transaction coordinator completed a commit before
    the partitions had a leader again, and skipped their markers as it does for deleted
    partitions. No client can make such a partition's records visible to ``read_committed``
    readers (``kafka-transactions.sh find-hanging`` / ``abort`` is the operator's remedy).
    Returns ``topic[partition]: LSO < HW`` lines (empty when there is none)."""
    from confluent_kafka import Consumer, TopicPartition

    def ends(isolation: str) -> dict[tuple[str, int], int]:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hanging-{uuid.uuid4().hex}",
                      "isolation.level": isolation, "enable.auto.commit": False})
        try:
            md = c.list_topics(timeout=10)
            tps = [(t, p) for t, tm in md.topics.items() if any(t.startswith(x) for x in prefixes)
                   for p in tm.partitions]
            return {tp: c.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False)[1] for tp in tps}
        finally:
            c.close()

    deadline = time.monotonic() + settle
    while True:
        stable, high = ends("read_committed"), ends("read_uncommitted")
        stuck = sorted(f"{t}[{p}]: last stable offset {stable[(t, p)]} < high watermark {h}"
                       for (t, p), h in high.items() if stable.get((t, p), h) < h)
        if not stuck or time.monotonic() >= deadline:
            return stuck
        time.sleep(2)

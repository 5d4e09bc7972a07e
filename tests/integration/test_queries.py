"""Interactive queries on a real broker (issue 16): three members of tests/apps/queries.py
(EOS, 6 partitions, each its own state directory, HTTP port and advertised URL).

- every key asked from every member answers its committed count (routed to the owner), and
  range/all/window queries and /metadata agree;
- after one member is killed (-9), the other two answer every key again once the group has
  rebalanced; meanwhile an answer is 503 with Retry-After or the right value, never another;
- a member restarted on an empty state directory restores a large changelog: queries of its
  partitions answer 503 "restoring" (with Retry-After) until it is done, then the right values.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer

from kstreamlet.query import partition_of
from kstreamlet.serdes import INT64
from kstreamlet.state.codec import key_prefix
from tests.integration.members import Members, read_committed

pytestmark = [pytest.mark.integration]

PARTITIONS = 6


def _keys(per_partition: int = 4) -> list[str]:
    """Keys covering every partition ``per_partition`` times (key -> partition as the producers choose)."""
    out: list[str] = []
    seen = [0] * PARTITIONS
    i = 0
    while min(seen) < per_partition:
        k = f"key-{i}"
        q = partition_of(k.encode(), PARTITIONS)
        if seen[q] < per_partition:
            seen[q] += 1
            out.append(k)
        i += 1
    return out


KEYS = _keys()
HOUR = 1_764_000_000_000 // 3_600_000 * 3_600_000  # event times of every record: one window


def expected_counts() -> dict[str, int]:
    return {k: 1 + i % 5 for i, k in enumerate(KEYS)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int, path: str, timeout: float = 15) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, dict(r.headers.items()), json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body.decode(errors="replace")
        return e.code, dict(e.headers.items()), parsed


def key_path(store: str, key: str, suffix: str = "") -> str:
    return f"/stores/{store}/{urllib.parse.quote(key, safe='')}{suffix}"


class Checker:
    """Asks until every (member, key) answered right; fails at once on a wrong value (stale or
    half restored), and on a 503 without Retry-After."""

    def __init__(self, members: Members, expected: dict[str, int]) -> None:
        self.members = members
        self.expected = expected
        self.unavailable: list[str] = []

    def one(self, port: int, key: str) -> bool:
        status, headers, body = ask(port, key_path("counts-value", key))
        if status == 503:
            assert headers.get("Retry-After") == "1", f"503 without Retry-After: {headers} {body}"
            self.unavailable.append(body["error"])
            return False
        assert status == 200, f"port {port} key {key}: {status} {body}"
        assert body["value"] == self.expected[key], f"port {port} key {key}: {body} (expected {self.expected[key]})"
        return True

    def until_all(self, ports: list[int], timeout: float) -> None:
        todo = {(p, k) for p in ports for k in self.expected}
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for p, k in sorted(todo):
                try:
                    ok = self.one(p, k)
                except OSError:  # a member just (re)started: its HTTP server is not up yet
                    ok = False
                if ok:
                    todo.discard((p, k))
            if todo:
                time.sleep(0.2)
        assert not todo, (f"{len(todo)} (port, key) pairs never answered within {timeout}s, e.g. {sorted(todo)[:5]}; "
                          f"last 503s: {self.unavailable[-3:]}\n{self.members.log_tail()}")


def test_queries_across_three_members_failover_and_restore(kafka_bootstrap, kafka_topic, tmp_path):
    inp = kafka_topic(partitions=PARTITIONS, name="queries-in")
    out = kafka_topic(partitions=PARTITIONS, name="queries-out")
    app_id = f"queries-{uuid.uuid4().hex[:8]}"
    names = ["m1", "m2", "m3"]
    ports = {n: _free_port() for n in names}
    members = Members("tests.apps.queries:app", {
        "IN_TOPIC": inp, "OUT_TOPIC": out,
        "KSTREAMLET_APPLICATION_ID": app_id,
        "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KSTREAMLET_PROCESSING_GUARANTEE": "exactly_once",
        "KSTREAMLET_COMMIT_INTERVAL": "0.2",
    }, tmp_path)

    def start(name: str, state: str) -> None:
        members.start(name, {"KSTREAMLET_HTTP_PORT": str(ports[name]),
                             "KSTREAMLET_ADVERTISED_URL": f"http://127.0.0.1:{ports[name]}",
                             "KSTREAMLET_STATE_DIR": str(tmp_path / state)})

    try:
        for n in names:
            start(n, f"state-{n}")
        for n in names:
            members.wait_event(n, "serving interactive queries", 90)
            members.wait_event(n, "partitions assigned", 90)

        expected = expected_counts()
        # log_level 0: these producers outlive the test until the session's broker stops
        p = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "log_level": 0})
        total = 0
        for i, key in enumerate(KEYS):
            for j in range(expected[key]):
                p.produce(inp, f"{key}:{j}".encode(), timestamp=HOUR + 1000 * j)
                total += 1
        p.flush(30)
        outputs = read_committed(kafka_bootstrap, out, expect=total, timeout=120, settle=1.0)
        assert len(outputs) == total, f"expected {total} committed outputs, saw {len(outputs)}\n{members.log_tail()}"

        # 1. Every key from every member: its committed count, wherever it lives.
        check = Checker(members, expected)
        check.until_all(list(ports.values()), 60)
        md = {}
        for n in names:
            status, _, md[n] = ask(ports[n], "/metadata")
            assert status == 200
            assert sorted(i["instance"] for i in md[n]["instances"]) == names, md[n]
            owners = md[n]["stores"]["counts-value"]["owners"]
            assert set(owners) == {str(q) for q in range(PARTITIONS)} and set(owners.values()) <= set(names), owners
        for key in KEYS:  # key -> instance: the same answer everywhere, and that instance owns the partition
            answers = {json.dumps(ask(ports[n], key_path("counts-value", key).replace("/stores/", "/metadata/"))[2],
                                  sort_keys=True) for n in names}
            assert len(answers) == 1, answers
            km = json.loads(answers.pop())
            assert km["partition"] == partition_of(key.encode(), PARTITIONS)
            assert km["url"] == f"http://127.0.0.1:{ports[km['instance']]}"
        for n in names:
            status, _, body = ask(ports[n], "/stores/counts-value")
            assert status == 200 and {e["key"]: e["value"] for e in body["entries"]} == expected, body
            lo, hi = "key-10", "key-19"
            status, _, body = ask(ports[n], f"/stores/counts-value?from={lo}&to={hi}")
            assert {e["key"] for e in body["entries"]} == {k for k in KEYS if lo <= k <= hi}
        # 2. A window store: the key's one window of that hour, with its count.
        for n in names:
            for key in KEYS[:6]:
                status, _, body = ask(ports[n], key_path("hourly-windows", key, f"/window?from={HOUR}&to={HOUR}"))
                assert status == 200, body
                assert body["windows"] == [{"window_start": HOUR, "window_end": HOUR + 3_600_000,
                                            "value": expected[key]}], body
                status, _, body = ask(ports[n], key_path("hourly-windows", key, f"/window?from={HOUR + 1}"))
                assert status == 200 and body["windows"] == []
        assert ask(ports["m1"], key_path("counts-value", "no-such-key"))[0] == 404
        assert ask(ports["m1"], key_path("no-such-store", "x"))[0] == 404

        # 3. Kill one member: after the rebalance the two others answer every key.
        members.kill9("m3")
        t0 = time.monotonic()
        live = [ports["m1"], ports["m2"]]
        check.unavailable.clear()
        check.until_all(live, 90)
        print(f"\nafter kill -9 of m3: every key answered by m1 and m2 within {time.monotonic() - t0:.1f}s; "
              f"{len(check.unavailable)} answers 503 meanwhile, e.g. {check.unavailable[:2]}")
        for n in ("m1", "m2"):  # the group's member list drops m3 (refreshed every 2 s)
            deadline = time.monotonic() + 15
            while True:
                status, _, body = ask(ports[n], "/metadata")
                if sorted(i["instance"] for i in body["instances"]) == ["m1", "m2"] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert sorted(i["instance"] for i in body["instances"]) == ["m1", "m2"], body

        # 4. A query during restore: a large changelog (filler keys written straight to it), and m3
        # back on an empty state directory restores what it is given.
        changelog = f"{app_id}-counts-value-changelog"
        filler = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                           "queue.buffering.max.messages": 1_000_000, "log_level": 0})
        per_partition = 200_000
        for q in range(PARTITIONS):
            for i in range(per_partition):
                while True:
                    try:
                        filler.produce(changelog, INT64.serialize(i), key_prefix(f"~filler-{q}-{i}".encode()),
                                       partition=q)
                        break
                    except BufferError:
                        filler.poll(0.05)
        filler.flush(120)
        # m1 and m2 stop first, so that m3 alone owns every task and restores every changelog
        # partition (with others in the group the assignor may give it only splitter tasks).
        for n in ("m1", "m2"):
            rc, _ = members.terminate(n)
            assert rc == 0, f"{n}'s graceful stop exited {rc}\n{members.log_tail()}"
        start("m3", "state-m3-empty")
        one_per_partition = list({partition_of(k.encode(), PARTITIONS): k for k in KEYS}.values())
        restoring_seen: list[str] = []
        deadline = time.monotonic() + 180
        done = False

        def big_restores_done() -> bool:
            started = [e for e in members.events("m3", "restoring store") if e.get("store") == "counts-value"]
            finished = [e for e in members.events("m3", "store restored") if e.get("store") == "counts-value"]
            return bool(started) and len(finished) >= len(started)

        while time.monotonic() < deadline:
            done = True
            for port in (ports["m3"],):
                for key in one_per_partition:
                    try:
                        ok = check.one(port, key)
                    except OSError:
                        ok = False  # m3's HTTP server not up yet
                    done = done and ok
            restoring_seen += [e for e in check.unavailable if "restoring" in e]
            check.unavailable.clear()
            if done and big_restores_done():
                break
        assert done and big_restores_done(), f"queries did not answer right after m3's restore\n{members.log_tail()}"
        restored = members.events("m3", "store restored")
        assert any(e.get("store") == "counts-value" and e.get("records", 0) >= per_partition for e in restored), \
            f"m3 restored no large changelog partition: {restored}"
        assert restoring_seen, "no query saw a partition restoring (503) although m3 restored a large changelog"
        print(f"during m3's restore: {len(restoring_seen)} answers 503 'restoring', e.g. {restoring_seen[0]}")
        # m1 and m2 come back on their own state: the group spreads the tasks again, and every key
        # is answered right from every member.
        start("m1", "state-m1")
        start("m2", "state-m2")
        check.until_all(list(ports.values()), 90)
    finally:
        codes = members.stop_all()
    assert all(c == 0 for c in codes.values()), codes

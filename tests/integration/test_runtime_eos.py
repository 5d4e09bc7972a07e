"""Exactly-once and at-least-once on the real broker, with members killed, added and stopped.

Every test compares full multisets of outputs against the inputs: a lost record shows
as missing, a record processed twice in committed output as duplicated.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.integration.members import Feeder, Members, multiset_diff, read_committed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture
def service(kafka_bootstrap, kafka_topic, tmp_path):
    def make(guarantee="exactly_once", partitions=6, commit_interval="0.2"):
        inp = kafka_topic(partitions=partitions, name="in")
        out = kafka_topic(partitions=partitions, name="out")
        app_id = f"eos-{uuid.uuid4().hex[:8]}"
        env = {
            "IN_TOPIC": inp, "OUT_TOPIC": out,
            "KSTREAMLET_APPLICATION_ID": app_id,
            "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KSTREAMLET_PROCESSING_GUARANTEE": guarantee,
            "KSTREAMLET_COMMIT_INTERVAL": commit_interval,
        }
        members = Members("tests.apps.stateless:app", env, tmp_path)
        made.append(members)
        return members, inp, out, app_id

    made: list[Members] = []
    yield make
    for m in made:
        m.stop_all()


def _wait_started(members: Members, names: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(members.events(n, "partitions assigned") for n in names):
            return
        time.sleep(0.2)
    raise AssertionError(f"members {names} did not get partitions in {timeout}s:\n{members.log_tail()}")


def _check_exactly_once(bootstrap, out, n, members):
    expected = [f"{i}:out".encode() for i in range(n)]
    seen = read_committed(bootstrap, out, expect=n, timeout=180)
    missing, extra = multiset_diff(expected, seen)
    assert not missing and not extra, (
        f"expected each of {n} outputs exactly once; missing {sum(missing.values())} "
        f"(e.g. {list(missing)[:5]}), duplicated/unexpected {sum(extra.values())} (e.g. {list(extra)[:5]})\n"
        + members.log_tail()
    )


def test_exactly_once_when_a_member_is_killed_twice_mid_run(service, kafka_bootstrap):
    members, inp, out, _ = service()
    n = 200_000
    for name in ("m1", "m2", "m3"):
        members.start(name)
    _wait_started(members, ["m1"])
    feeder = Feeder(kafka_bootstrap, inp, (str(i) for i in range(n)), rate=12_000)
    feeder.start()
    for _ in range(2):
        time.sleep(4)
        assert feeder.is_alive(), "the input finished before the kill: the test would prove nothing"
        members.kill9("m2")
        time.sleep(1.5)
        members.start("m2")
    feeder.join(120)
    assert feeder.sent == n
    _check_exactly_once(kafka_bootstrap, out, n, members)
    codes = members.stop_all()
    assert all(c == 0 for c in codes.values()), f"graceful stop must exit 0, got {codes}"


def _ownership_violations(members: Members, name: str) -> list[str]:
    """Revocations that took every partition a member owned (a stop-the-world rebalance)."""
    owned: set[str] = set()
    bad = []
    events = sorted(members.events(name, "partitions assigned") + members.events(name, "partitions revoked"),
                    key=lambda e: e["timestamp"])
    for e in events:
        parts = {p.split("@")[0] for p in e["partitions"]}
        if e["event"] == "partitions assigned":
            owned |= parts
        else:
            if owned and parts >= owned and len(owned) > 1:
                bad.append(f"{name} revoked all of {sorted(owned)} at {e['timestamp']}")
            owned -= parts
    return bad


def test_exactly_once_through_scale_out_and_scale_in(service, kafka_bootstrap):
    members, inp, out, _ = service()
    n = 120_000
    for name in ("m1", "m2", "m3"):
        members.start(name)
    _wait_started(members, ["m1", "m2", "m3"])
    feeder = Feeder(kafka_bootstrap, inp, (str(i) for i in range(n)), rate=10_000)
    feeder.start()
    time.sleep(3)
    members.start("m4")
    _wait_started(members, ["m4"])
    time.sleep(3)
    assert feeder.is_alive(), "the input finished before scale-in: the test would prove nothing"
    rc, seconds = members.terminate("m1")
    assert rc == 0, f"SIGTERM must exit 0, got {rc}"
    print(f"scale-in: SIGTERM to exit {seconds:.2f}s")
    feeder.join(120)
    _check_exactly_once(kafka_bootstrap, out, n, members)
    # Cooperative rebalancing: while m4 joined and m1 left, m2/m3 kept the partitions not moved.
    violations = _ownership_violations(members, "m2") + _ownership_violations(members, "m3")
    assert not violations, "expected incremental (cooperative) revocations only:\n" + "\n".join(violations)


def test_poison_records_go_to_dlq_with_headers_and_nothing_is_lost(service, kafka_bootstrap):
    members, inp, out, app_id = service()
    values = [str(i) for i in range(2000)]
    poison_at = {10, 777, 1999}
    for i in poison_at:
        values[i] = "poison"
    members.start("m1")
    feeder = Feeder(kafka_bootstrap, inp, values, rate=50_000)
    feeder.start()
    feeder.join(60)
    good = [f"{v}:out".encode() for v in values if v != "poison"]
    seen = read_committed(kafka_bootstrap, out, expect=len(good), timeout=60)
    missing, extra = multiset_diff(good, seen)
    assert not missing and not extra, f"missing {list(missing)[:5]}, extra {list(extra)[:5]}"
    dlq = read_committed(kafka_bootstrap, f"{app_id}-dlq", expect=3, timeout=30, with_headers=True)
    assert [v for v, _ in dlq] == [b"poison"] * 3, f"expected 3 poison records in the DLQ, saw {dlq}"
    for _, headers in dlq:
        h = dict(headers)
        assert h["kstreamlet.error.type"] == b"ValueError" and h["kstreamlet.error.stage"] == b"process", h
        assert h["kstreamlet.error.message"] == b"poison record", h
        assert h["kstreamlet.source.topic"] == inp.encode() and int(h["kstreamlet.source.offset"]) >= 0, h


def test_at_least_once_loses_nothing_after_kill9(service, kafka_bootstrap):
    members, inp, out, _ = service(guarantee="at_least_once", commit_interval="1.0")
    n = 60_000
    members.start("m1")
    members.start("m2")
    _wait_started(members, ["m1"])
    feeder = Feeder(kafka_bootstrap, inp, (str(i) for i in range(n)), rate=10_000)
    feeder.start()
    time.sleep(3)
    members.kill9("m1")
    time.sleep(1)
    members.start("m1")
    feeder.join(60)
    expected = [f"{i}:out".encode() for i in range(n)]
    seen = read_committed(kafka_bootstrap, out, expect=n, timeout=120)
    missing, extra = multiset_diff(expected, seen)
    assert not missing, f"at-least-once lost {sum(missing.values())} records, e.g. {list(missing)[:5]}"
    print(f"at-least-once after kill -9: {sum(extra.values())} duplicates of {n}")

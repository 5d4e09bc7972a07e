"""Timers are state: after kill -9 and restart they fire, in timestamp order, exactly once; a
failing ``on_timer`` follows ``error_policy`` (``fail``: nothing committed, fires again after a
restart; ``dlq``: a dead-letter record, none of its output, fires no more)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer

from tests.integration.members import Members, read_committed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_event_time_timers_fire_in_order_after_kill9_restart(kafka_bootstrap, kafka_topic, tmp_path):
    inp, out = kafka_topic(1, name="in"), kafka_topic(1, name="out")
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": f"timers-{uuid.uuid4().hex[:8]}",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.1",
           "KSTREAMLET_STATE_DIR": str(tmp_path / "state")}
    members = Members("tests.apps.timers:app", env, tmp_path)
    p = Producer({"bootstrap.servers": kafka_bootstrap})

    def send(key: str, ts: int, fire_at: int | None) -> None:
        p.produce(inp, json.dumps({"k": key, "ts": ts, "fire_at": fire_at}).encode(), key.encode())
        p.flush(10)

    try:
        members.start("t1")
        for i, (key, fire_at) in enumerate([("k1", 500), ("k2", 300), ("k3", 400), ("k4", 100), ("k5", 200)]):
            send(key, 10 + i, fire_at)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not members.events("t1", "first record processed"):
            time.sleep(0.2)
        time.sleep(2)  # several commit intervals: the timers are committed to the changelog
        members.kill9("t1")
        members.start("t1")
        send("k0", 1_000, None)  # watermark 999: every timer is due
        got = read_committed(kafka_bootstrap, out, expect=5, timeout=60, settle=3)
    finally:
        members.stop_all()
    assert got == [b"k4@100", b"k5@200", b"k2@300", b"k3@400", b"k1@500"], (
        f"expected the 5 timers once each in timestamp order, saw {got}\n{members.log_tail()}")


def _timer_members(kafka_bootstrap, kafka_topic, tmp_path, policy: str):
    inp, out = kafka_topic(1, name="in"), kafka_topic(1, name="out")
    app_id = f"timers-{policy}-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.1",
           "KSTREAMLET_STATE_DIR": str(tmp_path / "state"), "KSTREAMLET_ERROR_POLICY": policy,
           # The record at ts 1000 leaves the watermark below the timers (bound 5 s); 2 s later the
           # idle input lets it reach 999, so the timers fire from the processing-time tick — the
           # path where an on_timer error used to escape the loop and the shutdown committed it.
           "OUT_OF_ORDERNESS_MS": "5000", "IDLENESS_MS": "2000"}
    p = Producer({"bootstrap.servers": kafka_bootstrap})

    def send(key: str, ts: int, fire_at: int | None) -> None:
        p.produce(inp, json.dumps({"k": key, "ts": ts, "fire_at": fire_at}).encode(), key.encode())
        p.flush(10)

    return Members("tests.apps.timers:app", env, tmp_path), send, out, app_id


def test_failing_timer_under_fail_stops_uncommitted_and_fires_once_after_the_fix(kafka_bootstrap, kafka_topic, tmp_path):
    members, send, out, _ = _timer_members(kafka_bootstrap, kafka_topic, tmp_path, "fail")
    try:
        members.start("t1", {"FAIL_TIMER_KEY": "bad"})
        for i, (key, fire_at) in enumerate([("k1", 100), ("bad", 300), ("k2", 500)]):
            send(key, 10 + i, fire_at)
        members.wait_event("t1", "first record processed", timeout=60)
        time.sleep(2)  # several commit intervals: the timers are committed
        send("k0", 1_000, None)  # idle 2 s later, watermark 999: k1@100 fires, then bad@300 emits and raises
        rc = members.wait_exit("t1", timeout=60)
        before = read_committed(kafka_bootstrap, out, expect=0, timeout=10, settle=2)
        members.start("t1")  # the bug removed
        after = read_committed(kafka_bootstrap, out, expect=3, timeout=60, settle=3)
    finally:
        members.stop_all()
    assert rc != 0, f"error_policy=fail must stop the member with a non-zero code\n{members.log_tail()}"
    assert before == [], f"the aborted checkpoint's outputs (k1@100, bad@300) must not be visible, saw {before}"
    assert members.events("t1", "processing failed with error_policy=fail; stopping"), members.log_tail()
    assert after == [b"k1@100", b"bad@300", b"k2@500"], (
        f"after the restart every timer fires exactly once, saw {after}\n{members.log_tail()}")


def test_failing_timer_under_dlq_is_dead_lettered_and_not_fired_again(kafka_bootstrap, kafka_topic, tmp_path):
    members, send, out, app_id = _timer_members(kafka_bootstrap, kafka_topic, tmp_path, "dlq")
    try:
        members.start("t1", {"FAIL_TIMER_KEY": "bad"})
        for i, (key, fire_at) in enumerate([("k1", 100), ("bad", 300), ("k2", 500)]):
            send(key, 10 + i, fire_at)
        members.wait_event("t1", "first record processed", timeout=60)
        send("k0", 1_000, None)
        got = read_committed(kafka_bootstrap, out, expect=2, timeout=60, settle=2)
        dlq = read_committed(kafka_bootstrap, f"{app_id}-dlq", expect=1, timeout=30, settle=1, with_headers=True)
        codes = members.stop_all()
        members.start("t1")  # restarted (without the bug): the dead-lettered timer does not fire again
        send("k3", 7_000, None)  # passes 300 even before idleness
        deadline = time.monotonic() + 60
        while len(members.events("t1", "first record processed")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the watermark passed 300 again: a timer left behind would have fired
        again = read_committed(kafka_bootstrap, out, expect=2, timeout=30, settle=2)
    finally:
        members.stop_all()
    assert codes == {"t1": 0}, f"a failing timer under dlq must not stop the member: {codes}\n{members.log_tail()}"
    assert got == [b"k1@100", b"k2@500"], f"nothing of the failing call may be visible, saw {got}"
    assert len(dlq) == 1, dlq
    headers = {k: v for k, v in dlq[0][1]}
    assert headers["kstreamlet.error.stage"] == b"timer" and headers["kstreamlet.timer.key"] == b"bad"
    assert headers["kstreamlet.timer.timestamp"] == b"300" and headers["kstreamlet.timer.operator"] == b"timers"
    assert again == got, f"the dead-lettered timer fired again after the restart: {again}"

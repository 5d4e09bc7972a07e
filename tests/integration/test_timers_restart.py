"""Timers are state: after kill -9 and restart they fire, in timestamp order, exactly once."""

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

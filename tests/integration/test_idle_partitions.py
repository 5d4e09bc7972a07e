"""Windows after ``key_by`` fire although two of the three input partitions never get a record:
their upstream tasks report themselves idle downstream after the idleness timeout (10 s).

Before the fix the repartition input waited for a watermark from every upstream task, so the
window never fired (one record on partitions 1 and 2 made it fire at once).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer

from tests.integration.members import Members, read_committed

pytestmark = [pytest.mark.integration]

T0 = 1_700_000_040_000  # a minute boundary (epoch ms)


def test_window_after_key_by_fires_with_empty_input_partitions(kafka_bootstrap, kafka_topic, tmp_path):
    clicks, counts = kafka_topic(3, name="clicks"), kafka_topic(1, name="counts")
    env = {"IN_TOPIC": clicks, "OUT_TOPIC": counts, "KSTREAMLET_APPLICATION_ID": f"idle-{uuid.uuid4().hex[:8]}",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
           "KSTREAMLET_STATE_DIR": str(tmp_path / "state"), "KSTREAMLET_LOG_LEVEL": "debug"}
    members = Members("tests.apps.idle_clicks:app", env, tmp_path)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    events = [("ann", 1_000, "click"), ("bob", 5_000, "click"), ("ann", 20_000, "view"), ("ann", 30_000, "click"),
              ("cid", 59_000, "click"), ("ann", 61_000, "click")]  # the last one is past the first window
    try:
        members.start("m1")
        members.wait_event("m1", "partitions assigned", timeout=60)
        for user, dt, kind in events:
            p.produce(clicks, json.dumps({"user": user, "ts": T0 + dt, "kind": kind}).encode(), user.encode(), partition=0)
        p.flush(10)
        t0 = time.monotonic()
        got = read_committed(kafka_bootstrap, counts, expect=3, timeout=40, settle=1)
        took = time.monotonic() - t0
    finally:
        codes = members.stop_all()
    end = T0 + 60_000
    assert sorted(got) == sorted(f"{u}|{end}|{n}".encode() for u, n in [("ann", 2), ("bob", 1), ("cid", 1)]), (
        f"expected the first window's counts within 40 s with partitions 1 and 2 empty, saw {got} after {took:.1f}s\n"
        f"{members.grep('watermark held back', limit=12)}\n{members.log_tail()}")
    assert codes == {"m1": 0}, codes

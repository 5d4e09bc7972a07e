"""``kstreamlet reset`` on a real broker: refuses while a member runs; after the stop it resets
the input offsets, deletes the internal topics and the local state, and the app reprocesses
everything from the start."""

from __future__ import annotations

import collections
import struct
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.members import Members, read_committed
from tests.integration.tools_cli import cli, cli_json

pytestmark = [pytest.mark.integration]


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed"})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)]
    finally:
        c.close()


def test_reset_refuses_while_running_then_reprocesses_from_the_start(kafka_bootstrap, kafka_admin, kafka_topic, tmp_path):
    inp = kafka_topic(partitions=2, name="lines")
    out = kafka_topic(partitions=2, name="counts")
    app_id = f"resettool-{uuid.uuid4().hex[:8]}"
    state_dir = tmp_path / "state"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
           "KSTREAMLET_STATE_DIR": str(state_dir)}
    lines = ["a b", "b c", "c a", "a"] * 5
    truth = collections.Counter(w for line in lines for w in line.split())
    total = sum(truth.values())
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, line in enumerate(lines):
        p.produce(inp, line.encode(), partition=i % 2)
    p.flush(10)
    repartition, changelog = f"{app_id}-words-repartition", f"{app_id}-counts-value-changelog"
    members = Members("services.wordcount:app", env, tmp_path)
    try:
        members.start("m1")
        assert len(read_committed(kafka_bootstrap, out, expect=total, timeout=120, settle=1)) == total
        refused = cli(["reset", "services.wordcount:app"], env, check=2)
        assert "active member" in refused.stderr and "stop every instance" in refused.stderr, refused.stderr
        cli(["reset", "services.wordcount:app", "--dry-run"], env, check=2)
        assert members.terminate("m1")[0] == 0
        assert _committed(kafka_bootstrap, app_id, inp, 2) == [10, 10]
        assert (state_dir / app_id).exists()
        topics = kafka_admin.list_topics(timeout=10).topics
        assert repartition in topics and changelog in topics

        deadline = time.monotonic() + 30  # the stopped member has left the group
        while cli(["reset", "services.wordcount:app", "--dry-run"], env, check=None).returncode == 2:
            assert time.monotonic() < deadline, "the group kept an active member after the stop"
            time.sleep(1)
        plan = cli_json(["reset", "services.wordcount:app", "--dry-run"], env)
        assert plan["dry_run"] and plan["input_topics"] == [inp]
        assert [(o["topic"], o["partition"], o["offset"]) for o in plan["offsets"]] == [(inp, 0, 0), (inp, 1, 0)]
        recorded = f"{app_id}-topology"  # the recorded topology goes too: the app may start changed
        assert plan["delete_topics"] == sorted([repartition, changelog, recorded]) and plan["wipe_state_dir"]
        # Other positions, as plans: a time after every record is the end; an offset is clamped.
        later = cli_json(["reset", "services.wordcount:app", "--dry-run", "--to-datetime", "2999-01-01T00:00:00Z"], env)
        assert [o["offset"] for o in later["offsets"]] == [10, 10]
        hour = cli_json(["reset", "services.wordcount:app", "--dry-run", "--by-duration", "PT1H"], env)
        assert [o["offset"] for o in hour["offsets"]] == [0, 0]
        at = cli_json(["reset", "services.wordcount:app", "--dry-run", "--to-offset", "7"], env)
        assert [o["offset"] for o in at["offsets"]] == [7, 7]
        assert kafka_admin.list_topics(timeout=10).topics.keys() >= {repartition, changelog}  # dry runs change nothing

        done = cli_json(["reset", "services.wordcount:app"], env)
        assert not done["dry_run"]
        assert _committed(kafka_bootstrap, app_id, inp, 2) == [0, 0]
        topics = kafka_admin.list_topics(timeout=10).topics
        assert repartition not in topics and changelog not in topics and recorded not in topics
        assert not (state_dir / app_id).exists()
        assert f"{app_id}-dlq" in topics  # the DLQ only goes with --include-dlq

        members.start("m1")  # reprocesses everything, counting from scratch
        updates = read_committed(kafka_bootstrap, out, expect=2 * total, timeout=120, settle=2)
        assert members.terminate("m1")[0] == 0
        deadline = time.monotonic() + 30
        while cli(["reset", "services.wordcount:app", "--dry-run"], env, check=None).returncode == 2:
            assert time.monotonic() < deadline, "the group kept an active member after the stop"
            time.sleep(1)
        with_dlq = cli_json(["reset", "services.wordcount:app", "--include-dlq"], env)
        assert f"{app_id}-dlq" in with_dlq["delete_topics"] and with_dlq["delete_groups"] == [f"{app_id}-dlq-replay"]
        assert f"{app_id}-dlq" not in kafka_admin.list_topics(timeout=10).topics
    finally:
        codes = members.stop_all()
    assert all(c == 0 for c in codes.values()), codes
    assert len(updates) == 2 * total, f"expected every word counted twice over, got {len(updates)} of {2 * total}"
    counts = collections.Counter(struct.unpack(">q", v)[0] for v in updates)
    # Each word's running counts 1..N, once before the reset and once after.
    expected = collections.Counter(n for w, c in truth.items() for n in range(1, c + 1))
    assert counts == expected + expected

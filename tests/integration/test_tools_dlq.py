"""``kstreamlet dlq show|replay`` on a real broker: a poison record goes to the DLQ, ``show`` lists
it with its headers, ``replay`` re-injects it exactly once (twice run: one copy), and a replay
killed with SIGKILL midway and run again writes every record exactly once."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from kstreamlet.runtime.topics import create_topics, delete_topics
from tests.integration.members import ROOT, Members, read_committed
from tests.integration.tools_cli import cli, cli_json, cli_json_lines

pytestmark = [pytest.mark.integration]


def _read_all(bootstrap: str, topic: str, expect: int, timeout: float = 60) -> list:
    """``(key, value, headers)`` of every committed record of ``topic`` (duplicates would show)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    quiet = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = [m for m in c.consume(5000, 0.5) if m.error() is None]
            if got:
                quiet = time.monotonic()
                out.extend((m.key(), m.value(), m.headers()) for m in got)
            elif len(out) >= expect and time.monotonic() - quiet >= 3:
                break
    finally:
        c.close()
    return out


def test_poison_record_shown_with_headers_and_replayed_exactly_once(kafka_bootstrap, kafka_admin, kafka_topic, tmp_path):
    inp = kafka_topic(partitions=2, name="in")
    out = kafka_topic(partitions=2, name="out")
    app_id = f"dlqtool-{uuid.uuid4().hex[:8]}"
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2"}
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(inp, b"1", b"k1", partition=1)
    p.produce(inp, b"poison", b"kp", partition=1, headers=[("trace", b"abc"), ("kstreamlet.error.type", b"mine")])
    p.produce(inp, b"2", b"k2", partition=1)
    p.flush(10)
    members = Members("tests.apps.stateless:app", env, tmp_path)
    try:
        members.start("m1")
        assert sorted(read_committed(kafka_bootstrap, out, expect=2, timeout=60)) == [b"1:out", b"2:out"]
        dlq = read_committed(kafka_bootstrap, f"{app_id}-dlq", expect=1, timeout=30)
        assert dlq == [b"poison"]
    finally:
        codes = members.stop_all()
    assert codes == {"m1": 0}

    shown = cli_json_lines(["dlq", "show", "tests.apps.stateless:app"], env)
    assert len(shown) == 1, shown
    d = shown[0]
    assert (d["stage"], d["error_type"], d["error_message"]) == ("process", "ValueError", "poison record")
    assert (d["source_topic"], d["source_partition"], d["source_offset"]) == (inp, 1, 1)
    assert (d["key"], d["value"], d["application_id"]) == ("kp", "poison", app_id)
    # The record's own headers stay apart from the DLQ's, even one that shares a DLQ header name.
    assert d["headers"] == [["trace", "abc"], ["kstreamlet.error.type", "mine"]]
    assert d["dlq_headers"]["kstreamlet.source.topic"] == inp
    text = cli(["dlq", "show", "tests.apps.stateless:app"], env).stdout
    assert "ValueError: poison record" in text and f"{inp}[1]@1" in text
    # Filters: nothing of another error type or source topic.
    assert cli_json_lines(["dlq", "show", "tests.apps.stateless:app", "--error-type", "KeyError"], env) == []
    assert cli_json_lines(["dlq", "show", "tests.apps.stateless:app", "--source-topic", out], env) == []
    assert len(cli_json_lines(["dlq", "show", "tests.apps.stateless:app", "--from-offset", "0", "--to-offset", "0"],
                              env)) == 1

    dry = cli_json(["dlq", "replay", "tests.apps.stateless:app", "--dry-run"], env)
    assert dry["would_replay"] == 1 and dry["records"][0]["value"] == "poison"
    first = cli_json(["dlq", "replay", "tests.apps.stateless:app"], env)
    assert first["replayed"] == 1 and first["by_topic"] == {inp: 1}, first
    second = cli_json(["dlq", "replay", "tests.apps.stateless:app"], env)
    assert second["replayed"] == 0, second
    records = _read_all(kafka_bootstrap, inp, expect=4)
    assert [v for _, v, _ in records].count(b"poison") == 2, records  # the original and exactly one replay
    replayed = [r for r in records if r[1] == b"poison"]
    # Same key and the record's own headers, none of the DLQ's; written to the partition it came from.
    assert all(k == b"kp" for k, _, _ in replayed)
    assert all(h == [("trace", b"abc"), ("kstreamlet.error.type", b"mine")] for _, _, h in replayed), replayed
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"v-{uuid.uuid4().hex}", "isolation.level": "read_committed"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(inp, 1), timeout=10)
        assert hi >= 4  # 3 originals + the replay (+ transaction markers) in partition 1
    finally:
        c.close()


def _dead_letter(source: str, partition: int, i: int) -> tuple[bytes, bytes, list]:
    headers = [("kstreamlet.error.stage", b"process"), ("kstreamlet.error.type", b"ValueError"),
               ("kstreamlet.error.message", b"boom"), ("kstreamlet.source.topic", source.encode()),
               ("kstreamlet.source.partition", str(partition).encode()), ("kstreamlet.source.offset", str(i).encode()),
               ("kstreamlet.source.timestamp", str(int(time.time() * 1000)).encode()),
               ("kstreamlet.application.id", b"x"), ("n", str(i).encode())]
    return f"k{i}".encode(), f"v{i}".encode(), headers


def _committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed"})
    try:
        [tp] = c.committed([TopicPartition(topic, 0)], timeout=10)
        return max(tp.offset, 0)
    finally:
        c.close()


@pytest.mark.chaos
def test_replay_killed_midway_then_rerun_writes_each_record_once(kafka_bootstrap, kafka_admin, kafka_topic, tmp_path):
    target = kafka_topic(partitions=3, name="target")
    app_id = f"dlqkill-{uuid.uuid4().hex[:8]}"
    dlq = f"{app_id}-dlq"
    create_topics(kafka_admin, {dlq: 1})
    n = 6000
    p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for i in range(n):
        k, v, h = _dead_letter(target, i % 3, i)
        p.produce(dlq, v, k, headers=h)
    p.flush(30)
    env = {"IN_TOPIC": "unused", "OUT_TOPIC": "unused", "KSTREAMLET_APPLICATION_ID": app_id,
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap}
    group = f"{app_id}-dlq-replay"
    try:
        replayer = subprocess.Popen([sys.executable, "-m", "kstreamlet.cli", "dlq", "replay", "tests.apps.stateless:app",
                                     "--batch-size", "10"], cwd=ROOT, env={**__import__("os").environ, **env},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        pos = 0
        while time.monotonic() < deadline and replayer.poll() is None:
            pos = _committed(kafka_bootstrap, group, dlq)
            if pos >= 300:
                break
            time.sleep(0.1)
        replayer.send_signal(signal.SIGKILL)
        replayer.wait(10)
        assert 0 < pos < n, f"the replay should be killed midway (committed {pos} of {n})"
        killed_at = _committed(kafka_bootstrap, group, dlq)
        assert killed_at < n
        rerun = cli_json(["dlq", "replay", "tests.apps.stateless:app", "--batch-size", "500"], env, timeout=300)
        assert rerun["replayed"] == n - killed_at, (rerun, killed_at)
        again = cli_json(["dlq", "replay", "tests.apps.stateless:app"], env)
        assert again["replayed"] == 0
        records = _read_all(kafka_bootstrap, target, expect=n, timeout=120)
    finally:
        delete_topics(kafka_admin, [dlq])
    counts = collections.Counter(v for _, v, _ in records)
    missing = [i for i in range(n) if counts[f"v{i}".encode()] == 0]
    dup = {v: c for v, c in counts.items() if c > 1}
    assert not missing and not dup and len(records) == n, (
        f"killed at DLQ offset {killed_at}: {len(missing)} missing (e.g. {missing[:5]}), {len(dup)} duplicated "
        f"(e.g. {list(dup.items())[:5]})")
    # Original partition, key and headers (minus the DLQ's) of each replayed record.
    assert all(h == [("n", v[1:])] for _, v, h in records)

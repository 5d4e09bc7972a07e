"""A windowed aggregate and an interval join under exactly-once: kill -9 mid-run gives exactly
the result of an uninterrupted run (and the last windows close by idleness, with no new data)."""

from __future__ import annotations

import collections
import json
import random
import time
import uuid

import pytest
from confluent_kafka import Producer

from tests.integration.members import Feeder, Members, read_committed

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

N_EVENTS = 12_000


def _inputs():
    rnd = random.Random(11)
    events, clicks = [], []
    for i in range(N_EVENTS):
        ts = 1_000_000 + i + rnd.randint(0, 30)  # disorder (also of clicks) below the 100 ms bound: nothing is late
        k = f"k{rnd.randint(0, 15)}"
        events.append((k, json.dumps({"k": k, "ts": ts, "v": rnd.randint(1, 9), "id": f"e{i}"})))
        if i % 4 == 0:
            clicks.append((k, json.dumps({"k": k, "ts": ts + rnd.randint(-30, 30), "id": f"c{i}"})))
    return events, clicks


def _run(kafka_bootstrap, kafka_topic, tmp_path, kill: bool, expect_sums: int, expect_pairs: int):
    topics = {n: kafka_topic(partitions=4, name=n) for n in ("events", "clicks", "sums", "joined")}
    env = {"EVENTS_TOPIC": topics["events"], "CLICKS_TOPIC": topics["clicks"], "SUMS_TOPIC": topics["sums"],
           "JOINED_TOPIC": topics["joined"], "KSTREAMLET_APPLICATION_ID": f"win-{uuid.uuid4().hex[:8]}",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2",
           "KSTREAMLET_LOG_LEVEL": "debug"}  # late drops are logged at debug: a failure shows them
    members = Members("tests.apps.windows:app", env, tmp_path / ("kill" if kill else "clean"))
    members.log_dir.mkdir(parents=True, exist_ok=True)
    state = lambda n: {"KSTREAMLET_STATE_DIR": str(members.log_dir / f"state-{n}")}  # noqa: E731
    events, clicks = _inputs()
    try:
        members.start("m1", state("m1"))
        members.start("m2", state("m2"))
        fe = Feeder(kafka_bootstrap, topics["events"], events, rate=1_500)
        fc = Feeder(kafka_bootstrap, topics["clicks"], clicks, rate=375)
        fe.start()
        fc.start()
        if kill:
            for _ in range(2):
                time.sleep(3)
                assert fe.is_alive(), "input finished before the kill"
                members.kill9("m2")
                time.sleep(1)
                members.start("m2", state("m2"))
        fe.join(120)
        fc.join(120)
        # One far-future record per input partition moves every upstream task's watermark past
        # the last real window (a window needs the watermark past its end to close).
        flush = Producer({"bootstrap.servers": kafka_bootstrap})
        for topic in (topics["events"], topics["clicks"]):
            for p in range(4):
                flush.produce(topic, json.dumps({"k": "flush", "ts": 2_000_000, "v": 0, "id": f"flush{p}"}).encode(),
                              b"flush", partition=p)
        flush.flush(10)
        sums = read_committed(kafka_bootstrap, topics["sums"], expect=expect_sums, timeout=150, settle=3)
        joined = read_committed(kafka_bootstrap, topics["joined"], expect=expect_pairs, timeout=60, settle=3)
    finally:
        members.stop_all()
    keep = lambda vals: collections.Counter(v for v in vals if b"flush" not in v)  # noqa: E731
    return keep(sums), keep(joined), members


def _truth():
    events, clicks = _inputs()
    ev = [json.loads(v) for _, v in events]
    sums = collections.Counter()
    for e in ev:
        sums[(e["k"], (e["ts"] // 500) * 500 + 500)] += e["v"]
    cl = [json.loads(v) for _, v in clicks]
    by_k = collections.defaultdict(list)
    for c in cl:
        by_k[c["k"]].append(c)
    pairs = [f"{e['id']}|{c['id']}" for e in ev for c in by_k[e["k"]] if e["ts"] - 50 <= c["ts"] <= e["ts"] + 50]
    return collections.Counter(f"{k}|{end}|{s}".encode() for (k, end), s in sums.items()), \
        collections.Counter(p.encode() for p in pairs)


def test_window_and_interval_join_match_the_reference_on_the_broker(kafka_bootstrap, kafka_topic, tmp_path):
    """Two members, no failures: every window sum and join pair exactly once (idleness closes
    the last real windows only after the far-future flush records pass them)."""
    want_sums, want_pairs = _truth()
    n_sums, n_pairs = sum(want_sums.values()), sum(want_pairs.values())
    sums, pairs, _ = _run(kafka_bootstrap, kafka_topic, tmp_path, False, n_sums, n_pairs)
    assert sums == want_sums, (
        f"window sums differ from the reference: missing {list((want_sums - sums).items())[:5]}, "
        f"extra {list((sums - want_sums).items())[:5]}")
    assert pairs == want_pairs, (
        f"join pairs differ: missing {list((want_pairs - pairs))[:5]}, extra {list((pairs - want_pairs))[:5]}")


def test_window_and_interval_join_results_are_identical_with_and_without_kill9(kafka_bootstrap, kafka_topic, tmp_path):
    want_sums, want_pairs = _truth()
    n_sums, n_pairs = sum(want_sums.values()), sum(want_pairs.values())
    killed_sums, killed_pairs, members = _run(kafka_bootstrap, kafka_topic, tmp_path, True, n_sums, n_pairs)
    assert killed_sums == want_sums, (
        f"kill -9 run: window sums differ: missing {list((want_sums - killed_sums).items())[:5]}, "
        f"extra {list((killed_sums - want_sums).items())[:5]}\nlate drops:\n{members.grep('late record dropped')}\n"
        f"{members.log_tail()}")
    assert killed_pairs == want_pairs, (
        f"kill -9 run: join pairs differ: missing {list((want_pairs - killed_pairs))[:5]}, "
        f"extra {list((killed_pairs - want_pairs))[:5]}\nlate drops:\n{members.grep('late record dropped')}\n"
        f"{members.log_tail()}")

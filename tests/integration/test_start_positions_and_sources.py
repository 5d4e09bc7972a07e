"""Start positions (seed 001: group offsets, earliest, latest, specific offsets, timestamp),
custom sources, and --workers, on the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from kstreamlet import App, Source, StartPosition, serdes
from tests.integration.members import RunningMember, read_committed

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# Record timestamps near now: a broker deletes segments whose timestamps are older than its retention.
T0 = int(time.time() * 1000) - 3_600_000


def _produce(bootstrap: str, topic: str, values: list[str], ts0: int = T0) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i, v in enumerate(values):
        p.produce(topic, v.encode(), partition=0, timestamp=ts0 + 1000 * i)
    p.flush(10)


def _app(bootstrap: str, group: str, inp: str, out: str, **stream_kw) -> App:
    app = App(application_id=group, bootstrap_servers=bootstrap, commit_interval=0.1)
    app.stream(inp, value_serde=serdes.STR, **stream_kw).to(out)
    return app


def _run_and_read(app: App, bootstrap: str, out: str, expect: int) -> list[bytes]:
    rm = RunningMember(app)
    try:
        got = read_committed(bootstrap, out, expect=expect, timeout=40, settle=2)
    finally:
        rm.stop()
    return got


@pytest.mark.parametrize(
    "start, expected",
    [
        ("earliest", [str(i) for i in range(10)]),
        ({0: 7}, ["7", "8", "9"]),
        (StartPosition.from_timestamp(T0 + 4_000), [str(i) for i in range(4, 10)]),
        ("group", [str(i) for i in range(10)]),  # no committed offsets: auto_offset_reset=earliest
    ],
    ids=["earliest", "specific-offsets", "timestamp", "group-default"],
)
def test_start_position_when_group_has_no_offsets(kafka_bootstrap, kafka_topic, start, expected):
    inp, out = kafka_topic(1, name="in"), kafka_topic(1, name="out")
    _produce(kafka_bootstrap, inp, [str(i) for i in range(10)])
    got = _run_and_read(_app(kafka_bootstrap, f"sp-{uuid.uuid4().hex[:6]}", inp, out, start=start),
                        kafka_bootstrap, out, len(expected))
    assert [g.decode() for g in got] == expected


def test_latest_skips_existing_records(kafka_bootstrap, kafka_topic):
    inp, out = kafka_topic(1, name="in"), kafka_topic(1, name="out")
    _produce(kafka_bootstrap, inp, ["old1", "old2"])
    rm = RunningMember(_app(kafka_bootstrap, f"sp-{uuid.uuid4().hex[:6]}", inp, out, start="latest"))
    try:
        rm.wait_ready()
        time.sleep(1.0)  # the assignment's position is resolved before we produce
        _produce(kafka_bootstrap, inp, ["new1", "new2"])
        got = read_committed(kafka_bootstrap, out, expect=2, timeout=30, settle=2)
    finally:
        rm.stop()
    assert got == [b"new1", b"new2"]


def test_committed_offsets_win_over_start_unless_overridden(kafka_bootstrap, kafka_topic):
    inp = kafka_topic(1, name="in")
    group = f"sp-{uuid.uuid4().hex[:6]}"
    _produce(kafka_bootstrap, inp, [str(i) for i in range(5)])
    out1 = kafka_topic(1, name="out")
    assert len(_run_and_read(_app(kafka_bootstrap, group, inp, out1, start="earliest"), kafka_bootstrap, out1, 5)) == 5
    _produce(kafka_bootstrap, inp, ["5", "6"])
    out2 = kafka_topic(1, name="out")
    got = _run_and_read(_app(kafka_bootstrap, group, inp, out2, start={0: 0}), kafka_bootstrap, out2, 2)
    assert got == [b"5", b"6"], f"committed offset 5 must win over start {{0: 0}}, saw {got}"
    out3 = kafka_topic(1, name="out")
    got = _run_and_read(_app(kafka_bootstrap, group, inp, out3, start={0: 3}, override_committed=True),
                        kafka_bootstrap, out3, 4)
    assert got == [b"3", b"4", b"5", b"6"], f"override_committed must restart at 3, saw {got}"


class CountingSource(Source):
    """Like the seed's SensorSource: run() loops until cancel()."""

    def __init__(self) -> None:
        self.running = True
        self.cancelled = False

    def run(self, ctx) -> None:
        i = 0
        while self.running:
            ctx.collect({"id": f"sensor_{i % 3}", "seq": i}, key=f"sensor_{i % 3}".encode())
            i += 1
            time.sleep(0.001)

    def cancel(self) -> None:
        self.running = False
        self.cancelled = True


def test_custom_source_and_generator_feed_streams_through_internal_topics(kafka_bootstrap, kafka_topic):
    out = kafka_topic(1, name="out")
    app = App(application_id=f"src-{uuid.uuid4().hex[:6]}", bootstrap_servers=kafka_bootstrap, commit_interval=0.1)
    src = CountingSource()
    sensors = app.source(src, name="sensors", value_serde=serdes.JSON)
    numbers = app.source(lambda: iter(range(100)), name="numbers", value_serde=serdes.JSON)
    sensors.map(lambda r: f"s:{r['seq']}").to(out, value_serde=serdes.STR)
    numbers.map(lambda n: f"n:{n}").to(out, value_serde=serdes.STR)
    rm = RunningMember(app)
    try:
        got = read_committed(kafka_bootstrap, out, expect=300, timeout=40, settle=0.5)
    finally:
        rm.stop()
    assert src.cancelled, "cancel() must be called on shutdown"
    ns = sorted(int(g[2:]) for g in got if g.startswith(b"n:"))
    assert ns[:100] == list(range(100)), f"the generator's 100 values must all arrive, saw {ns[:10]}..."
    seqs = [int(g[2:]) for g in got if g.startswith(b"s:")]
    assert len(seqs) >= 100 and sorted(seqs) == list(range(len(seqs))), "source records: none lost or repeated"


def test_workers_flag_runs_several_members_in_one_process(kafka_bootstrap, kafka_topic, tmp_path):
    inp, out = kafka_topic(4, name="in"), kafka_topic(4, name="out")
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(4000):
        p.produce(inp, str(i).encode(), str(i).encode())
    p.flush(10)
    env = {**os.environ, "IN_TOPIC": inp, "OUT_TOPIC": out, "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "KSTREAMLET_APPLICATION_ID": f"w-{uuid.uuid4().hex[:6]}", "KSTREAMLET_INSTANCE_ID": "pod-0"}
    log = tmp_path / "workers.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "kstreamlet.cli", "run", "tests.apps.stateless:app", "--workers", "2"],
                                env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        got = read_committed(kafka_bootstrap, out, expect=4000, timeout=60, settle=2)
        assert sorted(got) == sorted(f"{i}:out".encode() for i in range(4000))
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    text = log.read_text()
    assert rc == 0, f"SIGTERM must stop all workers with exit 0, got {rc}\n{text[-3000:]}"
    import json

    joined = {json.loads(line)["instance"] for line in text.splitlines()
              if line.startswith("{") and '"partitions assigned"' in line}
    assert joined == {"pod-0-w0", "pod-0-w1"}, f"expected both workers to own partitions, saw {joined}\n{text[-3000:]}"

"""Async operators (``map_async``) on the real broker against a real local HTTP service
(tests/apps/http_service.py: random latency, injected failures).

- kill -9 of a member mid-run (its checkpoints held calls in flight, which the next owners issue
  again): every input's output exactly once in committed output (counted
  with a ``read_committed`` reader), and in input order per partition (``ordered=True``);
- backpressure: a member whose tasks are full pauses their partitions and resumes them, and the
  service never sees more calls at once than the tasks' capacity; unordered mode still delivers
  every output exactly once.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Awaitable, Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kstreamlet import App, serdes
from kstreamlet.runtime.clients import KafkaClients
from kstreamlet.runtime.member import Member
from tests.apps.http_service import HttpService
from tests.integration.members import Feeder, Members, multiset_diff

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PARTITIONS = 6


def read_by_partition(bootstrap: str, topic: str, partitions: int, expect: int, timeout: float,
                      settle: float = 3.0) -> dict[int, list[bytes]]:
    """Every committed record of ``topic`` per partition, until ``expect`` arrived and nothing more
    came for ``settle`` s (so duplicates would show)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: dict[int, list[bytes]] = collections.defaultdict(list)
    n = 0
    deadline = time.monotonic() + timeout
    quiet = time.monotonic()
    try:
        while time.monotonic() < deadline:
            got = [m for m in c.consume(5000, 0.5) if m.error() is None]
            if got:
                quiet = time.monotonic()
                for m in got:
                    out[m.partition()].append(m.value())
                n += len(got)
            elif n >= expect and time.monotonic() - quiet >= settle:
                break
    finally:
        c.close()
    return out


@pytest.fixture
def http_service():
    with HttpService(latency_min=0.001, latency_max=0.02, fail_rate=0.05, seed=11) as svc:
        yield svc


def test_async_map_exactly_once_and_in_order_when_a_member_is_killed(kafka_bootstrap, kafka_topic, tmp_path,
                                                                      http_service):
    inp = kafka_topic(partitions=PARTITIONS, name="async-in")
    out = kafka_topic(partitions=PARTITIONS, name="async-out")
    env = {"IN_TOPIC": inp, "OUT_TOPIC": out, "ENRICH_URL": http_service.url, "ASYNC_CONCURRENCY": "16",
           "KSTREAMLET_APPLICATION_ID": f"async-{uuid.uuid4().hex[:8]}",
           "KSTREAMLET_BOOTSTRAP_SERVERS": kafka_bootstrap, "KSTREAMLET_COMMIT_INTERVAL": "0.2"}
    members = Members("tests.apps.async_enrich:app", env, tmp_path)
    try:
        for name in ("m1", "m2", "m3"):
            members.start(name)
        members.wait_event("m1", "partitions assigned", 60)
        n = 30_000  # 20 s of input: a restarted m2 rejoins only once its killed session expires
        feeder = Feeder(kafka_bootstrap, inp, (str(i) for i in range(n)), rate=1500)
        feeder.start()
        time.sleep(3)
        for kill in range(2):
            if kill:
                # The restarted m2 must own partitions and have committed checkpoints with calls in
                # flight (not only the settled ones of a rebalance) before it is killed again.
                deadline = time.monotonic() + 30
                while not members.events("m2", "partitions assigned", incarnation=-1) and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.5)
            assert feeder.is_alive(), "the input finished before the kill: the test would prove nothing"
            members.kill9("m2")
            time.sleep(1.0)
            members.start("m2")
        feeder.join(60)
        assert feeder.sent == n
        parts = read_by_partition(kafka_bootstrap, out, PARTITIONS, expect=n, timeout=60)
        seen = [v for vs in parts.values() for v in vs]
        missing, extra = multiset_diff([f"{i}:ok".encode() for i in range(n)], seen)
        assert not missing and not extra, (
            f"expected each of {n} outputs exactly once; missing {sum(missing.values())} (e.g. {list(missing)[:5]}), "
            f"duplicated {sum(extra.values())} (e.g. {list(extra)[:5]})\n" + members.log_tail())
        # ordered=True: the outputs of each input partition come in its input order (the feeder wrote
        # increasing numbers; in an output partition, those of one input partition must increase).
        source = {v: p for p, vs in read_by_partition(kafka_bootstrap, inp, PARTITIONS, expect=n, timeout=30,
                                                      settle=1.0).items() for v in vs}
        for p, vs in parts.items():
            by_input: dict[int, list[int]] = collections.defaultdict(list)
            for v in vs:
                num = v.split(b":")[0]
                by_input[source[num]].append(int(num))
            for q, nums in by_input.items():
                assert nums == sorted(nums), f"output partition {p}: input partition {q}'s outputs out of order"
        assert http_service.failures > 0, "no injected failure: the retries were not exercised"
        assert members.grep("async records held by the last checkpoint issued again"), (
            "no new owner issued held records again: the kill never caught a checkpoint with calls in flight")
        codes = members.stop_all()
        assert all(c == 0 for c in codes.values()), f"graceful stop must exit 0, got {codes}"
    finally:
        members.stop_all()


def aiohttp_enrich(url: str) -> Callable[[str], Awaitable[str]]:
    """``GET url?v=<value>`` with aiohttp, one session per event loop (in-process members each
    have their own loop)."""
    import asyncio

    import aiohttp

    sessions: dict[int, aiohttp.ClientSession] = {}

    async def enrich(v: str) -> str:
        s = sessions.get(id(asyncio.get_running_loop()))
        if s is None:
            s = sessions[id(asyncio.get_running_loop())] = aiohttp.ClientSession()
        async with s.get(url, params={"v": v}) as resp:
            resp.raise_for_status()
            return await resp.text()

    return enrich


class PauseRecorder(KafkaClients):
    """Real clients; the consumer's pause()/resume() calls are recorded."""

    def __init__(self) -> None:
        self.paused: list[tuple[str, int]] = []
        self.resumed: list[tuple[str, int]] = []

    def consumer(self, config):  # type: ignore[no-untyped-def]
        real = super().consumer(config)
        rec = self

        class Recording:
            def __getattr__(self, name):  # type: ignore[no-untyped-def]
                return getattr(real, name)

            def pause(self, parts):  # type: ignore[no-untyped-def]
                rec.paused += [(tp.topic, tp.partition) for tp in parts]
                return real.pause(parts)

            def resume(self, parts):  # type: ignore[no-untyped-def]
                rec.resumed += [(tp.topic, tp.partition) for tp in parts]
                return real.resume(parts)

        return Recording()


def test_async_backpressure_pauses_full_tasks_and_unordered_delivers_exactly_once(kafka_bootstrap, kafka_topic):
    inp = kafka_topic(partitions=2, name="async-bp-in")
    out = kafka_topic(partitions=2, name="async-bp-out")
    n, capacity = 600, 4
    with HttpService(latency_min=0.02, latency_max=0.05, seed=3) as svc:
        enrich = aiohttp_enrich(svc.url)
        # Small consume batches: a task pauses once it parks more than twice max(capacity, batch).
        app = App(application_id=f"async-bp-{uuid.uuid4().hex[:6]}", bootstrap_servers=kafka_bootstrap,
                  commit_interval=0.2, state_backend="memory", poll_batch_size=50)
        (app.stream(inp, value_serde=serdes.STR).map_async(enrich, concurrency=capacity, ordered=False)
            .to(out, value_serde=serdes.STR))
        clients = PauseRecorder()
        member = Member(app, f"bp-{uuid.uuid4().hex[:6]}", install_signal_handlers=False, clients=clients)
        t = threading.Thread(target=member.run, daemon=True)
        t.start()
        try:
            assert member.ready.wait(60)
            feeder = Feeder(kafka_bootstrap, inp, (str(i) for i in range(n)), rate=100_000)
            feeder.start()
            feeder.join(60)
            parts = read_by_partition(kafka_bootstrap, out, 2, expect=n, timeout=60)
        finally:
            member.stop()
            t.join(60)
        assert not t.is_alive()
    seen = [v for vs in parts.values() for v in vs]
    missing, extra = multiset_diff([f"{i}:ok".encode() for i in range(n)], seen)
    assert not missing and not extra, f"missing {sum(missing.values())}, duplicated {sum(extra.values())}"
    assert svc.max_in_flight <= capacity * 2, f"{svc.max_in_flight} calls at once; capacity {capacity} x 2 tasks"
    # Which task is full when the loop looks depends on how batches interleave; at least one must be.
    assert clients.paused and set(clients.paused) <= {(inp, 0), (inp, 1)}, \
        f"full tasks' partitions must be paused: {clients.paused}"
    assert set(clients.resumed) >= set(clients.paused), "paused partitions must be resumed"


def test_a_partition_paused_when_revoked_is_consumed_again_when_it_comes_back(kafka_bootstrap, kafka_topic, tmp_path):
    """librdkafka keeps a partition's pause across a revocation. A member whose task was paused by
    backpressure when a second member took its partition, and which gets it back when that
    member leaves, must consume it again (the stall the kill -9 test ran into: missing outputs)."""
    inp = kafka_topic(partitions=2, name="async-rv-in")
    out = kafka_topic(partitions=2, name="async-rv-out")
    n = 360
    with HttpService(latency_min=0.04, latency_max=0.06, seed=5) as svc:
        call = aiohttp_enrich(svc.url)

        async def enrich(v: frozenset[str]) -> str:
            return await call(next(iter(v)))

        app_id = f"async-rv-{uuid.uuid4().hex[:6]}"

        def make_app(state_dir: str) -> App:
            # Values JSON cannot encode: the checkpoints drain the calls instead of holding them, so
            # the operator's changelog stays empty and a partition coming back is not restored
            # (a restore would resume it and hide the stall).
            app = App(application_id=app_id, bootstrap_servers=kafka_bootstrap, commit_interval=0.2,
                      state_dir=state_dir, poll_batch_size=20)  # pauses past 40 parked records
            (app.stream(inp, value_serde=serdes.STR).map(lambda v: frozenset([v]))
                .map_async(enrich, concurrency=1, checkpoint_value_serde=serdes.JSON)
                .to(out, value_serde=serdes.STR))
            return app

        clients = PauseRecorder()
        revoked_paused: list[tuple[str, int]] = []

        class Watched(Member):
            def _on_revoke(self, consumer, partitions):  # type: ignore[no-untyped-def]
                now = collections.Counter(clients.paused) - collections.Counter(clients.resumed)
                revoked_paused.extend((tp.topic, tp.partition) for tp in partitions if now[(tp.topic, tp.partition)] > 0)
                super()._on_revoke(consumer, partitions)

        a = Watched(make_app(str(tmp_path / "a")), f"a-{uuid.uuid4().hex[:6]}", install_signal_handlers=False,
                    clients=clients)
        ta = threading.Thread(target=a.run, daemon=True)
        ta.start()
        b = Member(make_app(str(tmp_path / "b")), f"b-{uuid.uuid4().hex[:6]}", install_signal_handlers=False)
        tb = threading.Thread(target=b.run, daemon=True)
        try:
            assert a.ready.wait(60)
            # ~20 records/s per task (1 call at a time, ~50 ms each): a parks most of the input
            # and pauses both partitions, with input left for after the rebalances.
            feeder = Feeder(kafka_bootstrap, inp, (str(i) for i in range(n)), rate=100_000)
            feeder.start()
            feeder.join(60)
            time.sleep(1.0)
            tb.start()
            assert b.ready.wait(60)
            deadline = time.monotonic() + 30
            while not revoked_paused and time.monotonic() < deadline:
                time.sleep(0.1)
            b.stop()  # at once: b commits nothing, so a's state of the partition stays current
            tb.join(60)
            parts = read_by_partition(kafka_bootstrap, out, 2, expect=n, timeout=60)
        finally:
            b.stop()
            a.stop()
            ta.join(60)
        assert not ta.is_alive()
    assert revoked_paused, "no partition was paused when revoked: the case was not exercised"
    seen = [v for vs in parts.values() for v in vs]
    missing, extra = multiset_diff([f"{i}:ok".encode() for i in range(n)], seen)
    assert not missing and not extra, (f"missing {sum(missing.values())}, duplicated {sum(extra.values())}; "
                                       f"paused when revoked: {revoked_paused}")

"""The member's rebalance callbacks and recovery paths with fake Kafka clients (the
``KafkaClients`` factory is injectable). The fault tests (tests/integration/test_broker_faults.py)
prove the same paths against real brokers; these pin what each callback does to the
checkpoint: revoke commits first, loss aborts, an abort rewinds exactly the assigned inputs."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, TopicPartition

from kstreamlet import App, KeyedProcessFunction, serdes
from kstreamlet.state.keyed import ValueStateDescriptor
from kstreamlet.runtime.checkpoint import AbortCheckpoint
from kstreamlet.runtime.member import Member
from tests.unit.fakes import Msg


class FakeProducer:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.fail: dict[str, KafkaException] = {}

    def _call(self, name: str, *args: Any) -> None:
        self.log.append((name, *args))
        if name in self.fail:
            raise self.fail.pop(name)

    def init_transactions(self, timeout: float) -> None:
        self._call("init_transactions")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, value: Any = None, key: Any = None, partition: int = -1, **kw: Any) -> None:
        self.log.append(("produce", topic, value))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], group: Any, timeout: float) -> None:
        self._call("send_offsets", sorted((o.topic, o.partition, o.offset) for o in offsets))

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit_transaction")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort_transaction")


class FakeConsumer:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.callbacks: dict[str, Callable[..., None]] = {}

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.log.append(("assign", sorted((t.topic, t.partition, t.offset) for t in tps)))

    def pause(self, tps: list[TopicPartition]) -> None:
        self.log.append(("pause", sorted((t.topic, t.partition) for t in tps)))

    def resume(self, tps: list[TopicPartition]) -> None:
        self.log.append(("resume", sorted((t.topic, t.partition) for t in tps)))

    def seek(self, tp: TopicPartition) -> None:
        self.log.append(("seek", tp.topic, tp.partition, tp.offset))

    def consumer_group_metadata(self) -> str:
        return "group"

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(t.topic, t.partition, OFFSET_INVALID) for t in tps]

    def close(self) -> None:
        self.log.append(("close",))


class FakeClients:
    def __init__(self) -> None:
        self.log: list[Any] = []
        self.producers: list[FakeProducer] = []
        self.consumers: list[FakeConsumer] = []

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        self.producers.append(FakeProducer(self.log))
        return self.producers[-1]

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        self.consumers.append(FakeConsumer(self.log))
        return self.consumers[-1]

    def admin(self, config: dict[str, Any]) -> Any:
        raise AssertionError("no admin call expected: partition counts are known")


def member() -> tuple[Member, FakeClients, FakeConsumer]:
    app = App(application_id="rb", bootstrap_servers="127.0.0.1:1", processing_guarantee="exactly_once",
              instance_id="m1")
    app.stream("in").map(lambda v: v + b"!").to("out")
    clients = FakeClients()
    m = Member(app.topology(), "m1", install_signal_handlers=False, settings=app.settings, clients=clients)  # type: ignore[arg-type]
    m.topics.partition_counts.update({"in": 3, "out": 3})
    m._create_clients()
    consumer = clients.consumers[0]
    return m, clients, consumer


def parts(*ps: int) -> list[TopicPartition]:
    return [TopicPartition("in", p) for p in ps]


def test_assign_creates_tasks_and_makes_the_member_ready():
    m, clients, consumer = member()
    assert ("init_transactions",) in clients.log, "EOS fences earlier producers of the transactional.id first"
    consumer.callbacks["assign"](consumer, parts(0, 2))
    assert ("assign", [("in", 0, OFFSET_INVALID), ("in", 2, OFFSET_INVALID)]) in clients.log
    assert sorted(t.id for t in m.tasks) == ["0_0", "0_2"]
    assert m.ready.is_set() and m.readiness.joined_for is consumer


def test_revoke_commits_the_checkpoint_first_then_closes_the_revoked_tasks():
    m, clients, consumer = member()
    consumer.callbacks["assign"](consumer, parts(0, 1))
    m._process([Msg("in", 0, 10), Msg("in", 0, 11), Msg("in", 1, 4)])
    assert [e for e in clients.log if e[0] == "produce"] == [("produce", "out", b"v!")] * 3
    clients.log.clear()
    consumer.callbacks["revoke"](consumer, parts(0))
    assert clients.log == [("send_offsets", [("in", 0, 12), ("in", 1, 5)]), ("commit_transaction",),
                           ("resume", [("in", 0)])], \
        "the next owner of in[0] must start exactly after what this member committed; librdkafka " \
        "keeps a pause across a revocation, so a partition given up is resumed"
    assert [t.id for t in m.tasks] == ["0_1"] and m.tasks.assigned == {("in", 1)}


def test_lost_partitions_are_dropped_and_the_checkpoint_aborted_without_a_commit():
    m, clients, consumer = member()
    consumer.callbacks["assign"](consumer, parts(0, 1))
    m._process([Msg("in", 0, 3), Msg("in", 1, 8)])
    clients.log.clear()
    consumer.callbacks["lost"](consumer, parts(1))
    assert ("abort_transaction",) in clients.log and ("commit_transaction",) not in clients.log
    assert ("seek", "in", 0, 3) in clients.log, "the kept partition replays the aborted checkpoint"
    assert not any(e[:3] == ("seek", "in", 1) for e in clients.log), "another member may own in[1] now"
    assert ("resume", [("in", 1)]) in clients.log


def test_an_abortable_error_aborts_and_rewinds_each_input_to_the_checkpoints_first_offset():
    m, clients, consumer = member()
    consumer.callbacks["assign"](consumer, parts(0, 1))
    m._process([Msg("in", 0, 20), Msg("in", 0, 21)])
    m._process([Msg("in", 1, 7), Msg("in", 0, 22)])
    clients.log.clear()
    m._recover(AbortCheckpoint("injected"))
    assert clients.log[0] == ("abort_transaction",)
    assert sorted(e for e in clients.log if e[0] == "seek") == [("seek", "in", 0, 20), ("seek", "in", 1, 7)]
    assert all(not t.offsets and not t.first for t in m.tasks)


def test_a_fenced_commit_on_revoke_drops_the_checkpoint_and_rebuilds_after_the_callback():
    m, clients, consumer = member()
    consumer.callbacks["assign"](consumer, parts(0, 1))
    m._process([Msg("in", 0, 1)])
    clients.producers[0].fail["commit_transaction"] = KafkaException(
        KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    consumer.callbacks["revoke"](consumer, parts(0, 1))
    assert m._rebuild_needed, "the producer is beyond use: rebuilt once the callback returns"
    assert len(m.tasks) == 0
    m.heartbeat = _Beat()
    m._rebuild("test")
    assert len(clients.producers) == 2 and len(clients.consumers) == 2 and not m._rebuild_needed
    old = consumer
    old.callbacks["assign"](old, parts(2))  # a callback of the abandoned consumer
    assert len(m.tasks) == 0, "callbacks of abandoned clients must not touch the new clients' tasks"


class _Beat:
    def beat(self) -> None:
        pass


def test_a_timed_out_commit_is_never_retried_from_the_same_producer():
    m, clients, consumer = member()
    consumer.callbacks["assign"](consumer, parts(0))
    m._process([Msg("in", 0, 1)])
    clients.producers[0].fail["commit_transaction"] = KafkaException(
        KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))
    m.heartbeat = _Beat()
    with pytest.raises(Exception) as e:
        m._commit()
    assert type(e.value).__name__ == "FatalClientError"
    m._recover(e.value)  # type: ignore[arg-type]
    assert [x for x in clients.log if x[0] == "commit_transaction"] == [("commit_transaction",)]
    assert len(clients.producers) == 2, "rebuilt: a new producer's init_transactions settles the old transaction"


# --- a stateful task: the assignment reads each changelog's end offset ----------------------------

class _CountFn(KeyedProcessFunction):
    def open(self, ctx: Any) -> None:
        self.n = ctx.get_state(ValueStateDescriptor("n", serdes.INT64, default=0))

    def process_element(self, value: Any, ctx: Any) -> None:
        self.n.update(self.n.value() + 1)


def stateful_member(tmp_path: Any, watermark_errors: list[KafkaError]) -> tuple[Member, FakeClients, FakeConsumer]:
    """A member with one keyed state store (state in memory); the restore consumer's end-offset
    reads fail with ``watermark_errors`` (one per call) before they answer 0."""
    app = App(application_id="rbs", bootstrap_servers="127.0.0.1:1", processing_guarantee="exactly_once",
              instance_id="m1", state_backend="memory", state_dir=str(tmp_path))
    app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).keyed().process(_CountFn(), name="count")
    clients = FakeClients()
    errors = list(watermark_errors)

    def get_watermark_offsets(tp: TopicPartition, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        clients.log.append(("watermarks", tp.topic, tp.partition))
        if errors:
            raise KafkaException(errors.pop(0))
        return 0, 0

    m = Member(app.topology(), "m1", install_signal_handlers=False, settings=app.settings, clients=clients)  # type: ignore[arg-type]
    m.topics.partition_counts.update({"in": 2})
    m.topics.ensure_changelog = lambda topic, partitions: False  # type: ignore[method-assign]
    make = clients.consumer

    def consumer(config: dict[str, Any]) -> FakeConsumer:
        c = make(config)
        c.get_watermark_offsets = get_watermark_offsets  # type: ignore[attr-defined]
        return c

    clients.consumer = consumer  # type: ignore[method-assign]
    m._create_clients()
    return m, clients, clients.consumers[0]


def test_a_changelog_leader_moving_during_an_assignment_is_waited_for(tmp_path):
    moving = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, "Broker: Not leader for partition")
    m, clients, consumer = stateful_member(tmp_path, [moving, moving])
    consumer.callbacks["assign"](consumer, parts(0))
    assert [e for e in clients.log if e[0] == "watermarks"] == [("watermarks", "rbs-count-n-changelog", 0)] * 3
    assert ("assign", [("in", 0, OFFSET_INVALID)]) in clients.log and not m._rebuild_needed
    assert m.ready.is_set()


def test_an_assignment_that_cannot_complete_rebuilds_instead_of_raising_out_of_consume(tmp_path):
    # Before: the error escaped the on_assign callback, librdkafka re-raised it out of consume()
    # as a bare KafkaError that the loop did not catch, and the member exited 1.
    denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed")
    m, clients, consumer = stateful_member(tmp_path, [denied])
    consumer.callbacks["assign"](consumer, parts(0, 1))  # must not raise
    assert m._rebuild_needed and "TOPIC_AUTHORIZATION_FAILED" in m._rebuild_reason
    assert not m.ready.is_set()
    m.heartbeat = _Beat()
    m._rebuild(m._rebuild_reason)
    assert len(m.tasks) == 0 and len(clients.producers) == 2 and not m._rebuild_needed

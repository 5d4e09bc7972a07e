"""The checkpoint's commit and abort steps, with fake Kafka clients (runtime/checkpoint.py).

The broker tests (tests/integration) prove the same path end to end; these pin the order of
the steps and what each error becomes, which a broker cannot be made to do on demand."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from kstreamlet.runtime.checkpoint import AbortCheckpoint, Checkpointer, FatalClientError
from kstreamlet.runtime.collector import RecordCollector
from kstreamlet.runtime.production import OutputLimits


class FakeProducer:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.fail: dict[str, KafkaException] = {}
        self.unflushed = 0

    def _call(self, name: str, *args: Any) -> None:
        self.log.append((name, *args))
        if name in self.fail:
            raise self.fail.pop(name)

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(self, offsets: list[Any], group: Any, timeout: float) -> None:
        self._call("send_offsets", sorted((o.topic, o.partition, o.offset, o.metadata) for o in offsets))

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit_transaction")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort_transaction")

    def flush(self, timeout: float) -> int:
        self.log.append(("flush",))
        return self.unflushed

    def poll(self, timeout: float) -> int:
        return 0

    def produce(self, *a: Any, **kw: Any) -> None:
        self.log.append(("produce", a[0]))


class FakeConsumer:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.fail: KafkaException | None = None

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.log.append(("commit_offsets", sorted((o.topic, o.partition, o.offset) for o in offsets)))
        if self.fail is not None:
            raise self.fail


class FakeTask:
    """Implements what the checkpoint asks of a task (runtime/task.py ``Task``)."""

    def __init__(self, name: str, log: list[Any], metadata: str | None = None) -> None:
        self.name, self.log, self.metadata = name, log, metadata
        self.offsets: dict[tuple[str, int], int] = {}
        self.first: dict[tuple[str, int], int] = {}

    def consumed(self, topic: str, partition: int, first: int, last: int) -> None:
        self.first.setdefault((topic, partition), first)
        self.offsets[(topic, partition)] = last + 1

    def prepare_commit(self) -> dict[tuple[str, int], tuple[int, str | None]]:
        self.log.append(("prepare", self.name))
        return {tp: (off, self.metadata) for tp, off in self.offsets.items()}

    def committed(self) -> None:
        self.log.append(("committed", self.name))
        self.offsets.clear()
        self.first.clear()

    def aborted(self) -> dict[tuple[str, int], int]:
        self.log.append(("aborted", self.name))
        rewind = dict(self.first)
        self.offsets.clear()
        self.first.clear()
        return rewind


def make(eos: bool = True) -> tuple[Checkpointer, FakeProducer, FakeConsumer, list[Any]]:
    log: list[Any] = []
    producer, consumer = FakeProducer(log), FakeConsumer(log)
    collector = RecordCollector(producer, OutputLimits(), queue_timeout=1.0)  # type: ignore[arg-type]
    return Checkpointer(consumer, collector, eos, timeout=1.0), producer, consumer, log  # type: ignore[arg-type]


def kafka_error(code: int, **kw: Any) -> KafkaException:
    return KafkaException(KafkaError(code, "injected", **kw))


def test_eos_commit_gathers_offsets_from_every_task_then_commits_then_tells_them():
    ckpt, _, _, log = make()
    a, b = FakeTask("a", log, metadata="1;0"), FakeTask("b", log)
    a.consumed("in", 0, 5, 9)
    b.consumed("in", 1, 0, 2)
    b.consumed("other", 1, 7, 7)
    assert ckpt.commit([a, b]) is True
    assert log == [
        ("begin",),
        ("prepare", "a"), ("prepare", "b"),
        ("send_offsets", [("in", 0, 10, "1;0"), ("in", 1, 3, None), ("other", 1, 8, None)]),
        ("commit_transaction",),
        ("committed", "a"), ("committed", "b"),
    ]
    assert not ckpt.in_transaction
    log.clear()
    assert ckpt.commit([a, b]) is False, "nothing consumed, no transaction open: nothing to commit"
    assert log == []


def test_a_due_tick_without_records_still_commits():
    ckpt, _, _, log = make()
    task = FakeTask("t", log)
    ckpt.begin()
    ckpt.work_pending = True
    assert ckpt.commit([task]) is True
    assert ("commit_transaction",) in log and ("send_offsets", []) in log


def test_abort_rewinds_each_task_to_the_first_offset_of_the_checkpoint():
    ckpt, _, _, log = make()
    a, b = FakeTask("a", log), FakeTask("b", log)
    ckpt.begin()
    a.consumed("in", 0, 5, 9)
    a.consumed("in", 0, 10, 20)
    b.consumed("in", 1, 3, 4)
    rewind = ckpt.abort([a, b])
    assert rewind == {("in", 0): 5, ("in", 1): 3}
    assert log[-3:] == [("abort_transaction",), ("aborted", "a"), ("aborted", "b")]
    assert not a.offsets and not b.first and not ckpt.in_transaction


def test_an_abort_the_coordinator_refuses_is_fatal_but_the_tasks_drop_their_buffers_first():
    ckpt, producer, _, log = make()
    task = FakeTask("t", log)
    ckpt.begin()
    task.consumed("in", 0, 0, 3)
    producer.fail["abort_transaction"] = kafka_error(KafkaError._FENCED, fatal=True)
    with pytest.raises(FatalClientError):
        ckpt.abort([task])
    assert ("aborted", "t") in log and not task.offsets


@pytest.mark.parametrize("call,error,expected", [
    ("send_offsets", kafka_error(KafkaError._TIMED_OUT, retriable=True), FatalClientError),
    ("commit_transaction", kafka_error(KafkaError._TIMED_OUT, retriable=True), FatalClientError),
    ("commit_transaction", kafka_error(KafkaError.PRODUCER_FENCED, fatal=True), FatalClientError),
    ("send_offsets", kafka_error(KafkaError.COORDINATOR_NOT_AVAILABLE, txn_requires_abort=True), AbortCheckpoint),
])
def test_what_a_failing_transactional_call_becomes(call, error, expected):
    """A timed-out EndTxn/AddOffsets has an unknown outcome: never retried from the same producer
    (fatal → a new producer); a fence is fatal; an abortable error aborts and replays."""
    ckpt, producer, _, log = make()
    task = FakeTask("t", log)
    task.consumed("in", 0, 0, 0)
    producer.fail[call] = error
    with pytest.raises(expected):
        ckpt.commit([task])
    assert ("committed", "t") not in log, "a failed commit must not apply the task's state"
    assert task.offsets, "the task keeps its checkpoint until it is aborted"


def test_a_retriable_commit_error_is_retried_within_the_timeout():
    ckpt, producer, _, log = make()
    task = FakeTask("t", log)
    task.consumed("in", 0, 0, 0)
    producer.fail["commit_transaction"] = kafka_error(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)
    assert ckpt.commit([task]) is True
    assert [e for e in log if e[0] == "commit_transaction"] == [("commit_transaction",)] * 2
    assert ("committed", "t") in log


def test_at_least_once_commits_offsets_only_after_every_output_is_acknowledged():
    ckpt, producer, consumer, log = make(eos=False)
    task = FakeTask("t", log)
    task.consumed("in", 2, 0, 41)
    assert ckpt.commit([task]) is True
    assert log == [("prepare", "t"), ("flush",), ("commit_offsets", [("in", 2, 42)]), ("committed", "t")]

    log.clear()
    task.consumed("in", 2, 42, 50)
    ckpt.collector.delivery_failed = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    with pytest.raises(AbortCheckpoint, match="delivery error"):
        ckpt.commit([task])
    assert not any(e[0] == "commit_offsets" for e in log), "offsets must not pass an unacknowledged output"
    assert ckpt.collector.delivery_failed is None

    log.clear()
    producer.unflushed = 3
    with pytest.raises(AbortCheckpoint, match="3 outputs unacknowledged"):
        ckpt.commit([task])
    assert not any(e[0] == "commit_offsets" for e in log)
    assert ckpt.abort([task]) == {("in", 2): 42}


def test_a_failed_offset_commit_aborts_under_at_least_once():
    ckpt, _, consumer, log = make(eos=False)
    task = FakeTask("t", log)
    task.consumed("in", 0, 0, 0)
    consumer.fail = kafka_error(KafkaError.REBALANCE_IN_PROGRESS)
    with pytest.raises(AbortCheckpoint, match="offset commit failed"):
        ckpt.commit([task])
    assert ("committed", "t") not in log

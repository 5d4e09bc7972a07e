"""The task manager with a fake consumer (runtime/tasks.py): tasks per partition, routes, the
offsets each task notes for the checkpoint, start positions and stable committed offsets."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, KafkaError, TopicPartition

from kstreamlet import App
from kstreamlet.runtime.tasks import TaskManager
from kstreamlet.runtime.task import Task
from tests.unit.fakes import Msg


class FakeConsumer:
    """committed() answers from ``committed_offsets``; a partition listed in ``unstable`` answers
    UNSTABLE_OFFSET_COMMIT (a previous owner's transaction is open) that many times first."""

    def __init__(self, committed_offsets: dict[tuple[str, int], int] | None = None,
                 unstable: dict[tuple[str, int], int] | None = None) -> None:
        self.committed_offsets = committed_offsets or {}
        self.unstable = dict(unstable or {})
        self.committed_calls = 0

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.committed_calls += 1
        out = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            if self.unstable.get(key, 0) > 0:
                self.unstable[key] -= 1
                out.append(_WithError(tp.topic, tp.partition, KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT)))
            else:
                out.append(TopicPartition(tp.topic, tp.partition, self.committed_offsets.get(key, OFFSET_INVALID)))
        return out


class _WithError:
    def __init__(self, topic: str, partition: int, error: KafkaError) -> None:
        self.topic, self.partition, self.error = topic, partition, error


class Collector:
    errors = None

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, int]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, ts: int, partition: int,
             headers: Any = None) -> None:
        if value == b"boom":
            raise ValueError("a failing record")
        self.sent.append((topic, value, ts))

    def send_watermark(self, *a: Any) -> None:
        pass


def manager(start: str = "group") -> tuple[TaskManager, Collector]:
    app = App(application_id="tm", bootstrap_servers="127.0.0.1:1")
    app.stream("in", start=start).map(lambda v: v).to("out")
    topology = app.topology()
    collector = Collector()

    def new_task(st: Any, partition: int) -> Task:
        return Task(st, partition, collector, lambda t: 3, settings=app.settings)

    return TaskManager(topology, new_task, exactly_once=True, transaction_timeout=1.0), collector


def test_assign_makes_one_task_per_partition_and_revoke_closes_tasks_left_without_inputs():
    tm, _ = manager()
    a = tm.assign(FakeConsumer(), None, [TopicPartition("in", 0), TopicPartition("in", 2)])  # type: ignore[arg-type]
    assert sorted(t.id for t in a.created) == ["0_0", "0_2"]
    assert [(tp.topic, tp.partition, tp.offset) for tp in a.positioned] == [("in", 0, OFFSET_INVALID), ("in", 2, OFFSET_INVALID)]
    assert not a.paused and tm.assigned == {("in", 0), ("in", 2)}
    closed = tm.revoke([TopicPartition("in", 0)], None)
    assert [t.id for t in closed] == ["0_0"] and list(tm.routes) == [("in", 2)]


def test_process_routes_records_and_each_task_notes_its_offsets_once_per_run():
    tm, collector = manager()
    tm.assign(FakeConsumer(), None, [TopicPartition("in", 0), TopicPartition("in", 1)])  # type: ignore[arg-type]
    failed: list[tuple[int, str]] = []
    msgs = [Msg("in", 0, 5), Msg("in", 0, 6), Msg("in", 1, 3), Msg("in", 2, 9), Msg("in", 0, 7), Msg("in", 1, 4, b"boom")]
    n = tm.process(msgs, lambda m, e: failed.append((m.offset(), str(e))), lambda err: None)
    assert n == 5, "the record of the unassigned partition 2 is skipped"
    assert [v for _, v, _ in collector.sent] == [b"v"] * 4
    assert failed == [(4, "a failing record")], "a failing record goes to the error policy and counts as processed"
    t0, t1 = tm.task_of("in", 0), tm.task_of("in", 1)
    assert t0 is not None and t1 is not None
    assert t0.offsets == {("in", 0): 8} and t0.first == {("in", 0): 5}
    assert t1.offsets == {("in", 1): 5} and t1.first == {("in", 1): 3}


def test_an_error_that_stops_the_batch_marks_every_partition_of_it_for_rewind():
    tm, _ = manager()
    tm.assign(FakeConsumer(), None, [TopicPartition("in", 0), TopicPartition("in", 1)])  # type: ignore[arg-type]

    def consumer_error(err: KafkaError) -> None:
        raise RuntimeError("fatal consumer error")

    msgs = [Msg("in", 0, 5), Msg("in", 0, 6, error=KafkaError(KafkaError._FATAL)), Msg("in", 1, 11)]
    with pytest.raises(RuntimeError):
        tm.process(msgs, lambda m, e: None, consumer_error)
    t0, t1 = tm.task_of("in", 0), tm.task_of("in", 1)
    assert t0 is not None and t1 is not None
    assert t0.first == {("in", 0): 5} and t1.first == {("in", 1): 11}, \
        "partition 1 was never reached, but the consumer's position is past it: it must rewind too"


def test_an_explicit_start_position_applies_only_without_a_committed_offset():
    tm, _ = manager(start="earliest")
    a = tm.assign(FakeConsumer({("in", 1): 42}), None, [TopicPartition("in", 0), TopicPartition("in", 1)])  # type: ignore[arg-type]
    assert [(tp.partition, tp.offset) for tp in a.positioned] == [(0, OFFSET_BEGINNING), (1, 42)]


def test_committed_offsets_wait_until_the_previous_owners_transaction_is_resolved():
    tm, _ = manager()
    consumer = FakeConsumer({("in", 0): 7}, unstable={("in", 0): 2})
    got = tm.committed_stable(consumer, [TopicPartition("in", 0)])  # type: ignore[arg-type]
    assert [(c.partition, c.offset) for c in got] == [(0, 7)]
    assert consumer.committed_calls == 3, "asked again while the offset commit was unstable (KIP-447)"


def async_manager(concurrency: int) -> tuple[TaskManager, Collector]:
    import asyncio

    async def slow(v: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return v

    app = App(application_id="tm-async", bootstrap_servers="127.0.0.1:1")
    app.stream("in").map_async(slow, concurrency=concurrency).to("out")
    collector = Collector()

    def new_task(st: Any, partition: int) -> Task:
        return Task(st, partition, collector, lambda t: 3, settings=app.settings)

    return TaskManager(app.topology(), new_task, exactly_once=True, transaction_timeout=1.0), collector


def test_records_of_a_task_whose_async_operator_is_full_are_parked_not_routed():
    """A full async operator does not block the batch: its task's later records are parked (in
    partition order, behind any parked before), the commit offset stops before them, other tasks
    go on; parked records come back as slots free up, and an abort rewinds to them."""
    from kstreamlet.runtime.async_io import AsyncRuntime

    tm, collector = async_manager(concurrency=2)
    tm.assign(FakeConsumer(), None, [TopicPartition("in", 0), TopicPartition("in", 1)])  # type: ignore[arg-type]
    msgs = [Msg("in", 0, o, f"a{o}".encode()) for o in range(5, 10)] + [Msg("in", 1, 3, b"b3"), Msg("in", 1, 4, b"b4")]
    assert tm.process(msgs, lambda m, e: None, lambda err: None) == 4
    t0, t1 = tm.task_of("in", 0), tm.task_of("in", 1)
    assert t0 is not None and t1 is not None
    assert t0.offsets == {("in", 0): 7}, "the commit offset must not pass a parked record"
    assert t0.first == {("in", 0): 5} and t1.offsets == {("in", 1): 5}
    assert [m.offset() for m in t0.parked[("in", 0)]] == [7, 8, 9] and not t1.parked
    assert tm.parking == {t0} and tm.has_backlog(object(), "in", 0)  # type: ignore[arg-type]
    # A later batch of the partition queues behind the parked records, even with room.
    assert tm.process([Msg("in", 0, 10, b"a10")], lambda m, e: None, lambda err: None) == 0
    assert [m.offset() for m in t0.parked[("in", 0)]] == [7, 8, 9, 10]

    aio = AsyncRuntime.find(collector)
    assert aio is not None
    aio.run(1.0, 4)
    aio.emit_ready()
    assert not t0.async_full()
    back = tm.take_parked()
    assert [m.offset() for m in back] == [7, 8], "as many as the free slots, oldest first"
    # Routed while full (another batch filled the slots first): parked again, in front.
    routed = tm.process([Msg("in", 1, 5, b"b5")], lambda m, e: None, lambda err: None)
    assert routed == 1
    t0.async_queues[0].capacity = 0  # make it full for this check
    assert tm.process(back, lambda m, e: None, lambda err: None, resumed=True) == 0
    assert [m.offset() for m in t0.parked[("in", 0)]] == [7, 8, 9, 10]
    t0.async_queues[0].capacity = 2
    assert tm.process(tm.take_parked(), lambda m, e: None, lambda err: None, resumed=True) == 2
    assert t0.offsets == {("in", 0): 9} and [m.offset() for m in t0.parked[("in", 0)]] == [9, 10]
    aio.run(1.0, 2)
    aio.emit_ready()
    out = [v for _, v, _ in collector.sent]
    assert [v for v in out if v.startswith(b"a")] == [b"a5", b"a6", b"a7", b"a8"], "partition order kept"
    # An abort replays from the first record of the checkpoint, parked ones included.
    assert t0.aborted() == {("in", 0): 5} and not t0.parked
    assert tm.take_parked() == [] and not tm.parking


def test_an_abort_after_a_commit_rewinds_to_the_oldest_parked_record():
    tm, _ = async_manager(concurrency=1)
    tm.assign(FakeConsumer(), None, [TopicPartition("in", 0)])  # type: ignore[arg-type]
    tm.process([Msg("in", 0, o) for o in range(3)], lambda m, e: None, lambda err: None)
    t0 = tm.task_of("in", 0)
    assert t0 is not None and t0.offsets == {("in", 0): 1}
    t0.committed()  # a checkpoint committed offset 1 (the held record) while 1 and 2 stay parked
    assert t0.aborted() == {("in", 0): 1}, "parked records were consumed, never processed: replay them"


def test_revoking_a_partition_drops_its_parked_records():
    tm, _ = async_manager(concurrency=1)
    tm.assign(FakeConsumer(), None, [TopicPartition("in", 0), TopicPartition("in", 1)])  # type: ignore[arg-type]
    tm.process([Msg("in", 0, 0), Msg("in", 0, 1), Msg("in", 1, 0), Msg("in", 1, 1)], lambda m, e: None, lambda err: None)
    t1 = tm.task_of("in", 1)
    assert t1 is not None and t1.parked
    tm.revoke([TopicPartition("in", 0)], None)
    assert tm.task_of("in", 0) is None and t1 in tm.parking
    assert [(m.partition(), m.offset()) for m in tm.take_parked()] in ([], [(1, 1)])


def test_backpressure_pauses_past_twice_the_low_mark_of_parked_records_and_resumes_at_it():
    """The low mark is the larger of the capacity and the consume batch: a pause costs a refetch
    (librdkafka drops prefetched records), so it is not taken for a few parked records."""
    from kstreamlet.runtime.async_io import AsyncRuntime

    tm, collector = async_manager(concurrency=2)
    tm.assign(FakeConsumer(), None, [TopicPartition("in", 0)])  # type: ignore[arg-type]
    aio = AsyncRuntime.find(collector)
    assert aio is not None
    aio.batch = 5
    paused: list[list] = []
    resumed: list[list] = []

    def look() -> None:
        aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))

    tm.process([Msg("in", 0, o) for o in range(12)], lambda m, e: None, lambda err: None)  # 2 in flight, 10 parked
    look()
    assert paused == [], "10 parked is not more than twice the low mark (5)"
    tm.process([Msg("in", 0, 12)], lambda m, e: None, lambda err: None)
    look()
    assert paused == [[("in", 0)]]
    t0 = tm.task_of("in", 0)
    assert t0 is not None
    for _ in range(3):  # 11 -> 5 parked, two at a time as slots free
        aio.run(1.0, 2)
        aio.emit_ready()
        tm.process(tm.take_parked(), lambda m, e: None, lambda err: None, resumed=True)
        look()
        left = sum(len(q) for q in t0.parked.values())
        assert (resumed == []) == (left > 5), f"{left} parked: resumed {resumed}"
    assert resumed == [[("in", 0)]]


def test_resume_now_seeks_each_resumed_partition_to_its_own_position():
    from kstreamlet.runtime.topics import resume_now

    calls: list[Any] = []

    class C:
        def resume(self, tps: list[TopicPartition]) -> None:
            calls.append(("resume", [(t.topic, t.partition) for t in tps]))

        def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
            return [TopicPartition(t.topic, t.partition, {0: 42, 1: OFFSET_INVALID}[t.partition]) for t in tps]

        def seek(self, tp: TopicPartition) -> None:
            calls.append(("seek", tp.topic, tp.partition, tp.offset))

    resume_now(C(), [TopicPartition("in", 0), TopicPartition("in", 1)])  # type: ignore[arg-type]
    assert calls == [("resume", [("in", 0), ("in", 1)]), ("seek", "in", 0, 42)], \
        "a partition with no position yet (nothing consumed) is only resumed"

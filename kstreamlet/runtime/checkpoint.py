"""The checkpoint: the one place where progress becomes durable.

:meth:`Checkpointer.commit` takes the member's tasks and runs in numbered steps:

1. every task's ``prepare_commit()`` produces into the checkpoint what must commit with its
   offsets (watermark records, sink committables, changelog records) and *returns* its
   offsets ``{(topic, partition): (next offset, metadata)}`` (Kafka Streams' tasks do the same);
2. exactly-once (Kafka EOS v2, KIP-447): ``send_offsets_to_transaction`` and
   ``commit_transaction`` — the checkpoint is one Kafka transaction; at-least-once: flush the
   idempotent producer and, only when every output is acknowledged, commit the offsets;
3. every task's ``committed()`` applies its stores' buffers and tells its participants.

On an abortable error the transaction is aborted (:meth:`Checkpointer.abort`): each task
drops what it buffered and returns where its inputs rewind, so the records are processed
again in a new transaction.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from kstreamlet import metrics
from kstreamlet.runtime.deadline import CallTimedOut, call_with_deadline

log = structlog.get_logger("kstreamlet.checkpoint")

TP = tuple[str, int]

#: Seconds a transactional call may run past its own librdkafka timeout before it is
#: abandoned (librdkafka normally returns ``_TIMED_OUT`` first; see runtime/deadline.py).
CALL_SLACK = 5.0


class Collector(Protocol):
    """What the checkpoint needs of the record collector (runtime/collector.py)."""

    producer: Producer
    #: At-least-once: the first delivery error since the last commit.
    delivery_failed: KafkaError | None
    #: Changelog records and bytes sent since the last checkpoint (reset by the checkpoint).
    state_records: int
    state_bytes: int


class CheckpointTask(Protocol):
    """What the checkpoint needs of a task (runtime/task.py ``Task``)."""

    #: Next offset to commit, and first offset of this checkpoint, per input partition.
    offsets: dict[TP, int]
    first: dict[TP, int]

    def prepare_commit(self) -> dict[TP, tuple[int, str | None]]: ...
    def committed(self) -> None: ...
    def aborted(self) -> dict[TP, int]: ...


class AbortCheckpoint(Exception):
    """The current checkpoint must be aborted and its records replayed."""


class FatalClientError(Exception):
    """The producer is fenced or fatally broken: drop tasks, rebuild clients, rejoin."""


def classify(e: KafkaException) -> str:
    """``retriable`` | ``abortable`` | ``fatal`` for a transactional API error."""
    err: KafkaError = e.args[0]
    if err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH):
        return "fatal"
    if err.txn_requires_abort():
        return "abortable"
    if err.retriable():
        return "retriable"
    return "abortable"


class Checkpointer:
    """Commits or aborts the current checkpoint of a member's tasks."""

    def __init__(self, consumer: Consumer, collector: Collector, exactly_once: bool,
                 timeout: float = 60.0) -> None:
        self.consumer = consumer
        self.collector = collector
        self.producer = collector.producer
        self.exactly_once = exactly_once
        self.timeout = timeout
        #: How long a call may run past ``timeout`` before it is abandoned (shutdown lowers it).
        self.slack = CALL_SLACK
        self.in_transaction = False
        self.last_commit_seconds = 0.0
        #: Work without consumed records wants a commit (a due tick: fired timers, an idle task's
        #: watermark record). Under EOS the open transaction says so; at-least-once needs this.
        self.work_pending = False
        #: Input records processed since the last commit (added per batch by the member).
        self.input_records = 0

    def begin(self) -> None:
        if self.exactly_once and not self.in_transaction:
            try:
                self.producer.begin_transaction()
            except KafkaException as e:
                raise FatalClientError(str(e)) from e
            self.in_transaction = True

    def dirty(self, tasks: Iterable[CheckpointTask]) -> bool:
        return self.in_transaction or self.work_pending or any(t.offsets for t in tasks)

    def commit(self, tasks: Iterable[CheckpointTask]) -> bool:
        """Commit the current checkpoint of ``tasks``; False if there was nothing to commit.
        Raises AbortCheckpoint or FatalClientError."""
        tasks = list(tasks)
        if not self.dirty(tasks):
            return False
        t0 = time.monotonic()
        if self.exactly_once:
            self.begin()
        # 1. Each task produces what commits with its offsets, and returns the offsets.
        gathered: dict[TP, tuple[int, str | None]] = {}
        for task in tasks:
            gathered.update(task.prepare_commit())
        offsets = [TopicPartition(t, p, o) if md is None else TopicPartition(t, p, o, md)
                   for (t, p), (o, md) in gathered.items()]
        # 2. Offsets and outputs become durable together.
        if self.exactly_once:
            group = self.consumer.consumer_group_metadata()
            self._txn_call(lambda: self.producer.send_offsets_to_transaction(offsets, group, self.timeout),
                           "send_offsets_to_transaction")
            self._txn_call(lambda: self.producer.commit_transaction(self.timeout), "commit_transaction", retry=True)
            self.in_transaction = False
            self.producer.poll(0)  # serve delivery reports (changelog offsets) before stores read them
        else:
            remaining = self.producer.flush(self.timeout)
            failed = self.collector.delivery_failed
            if remaining or failed is not None:
                self.collector.delivery_failed = None
                raise AbortCheckpoint(f"{remaining} outputs unacknowledged, delivery error: {failed}")
            if offsets:
                try:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
                except KafkaException as e:
                    raise AbortCheckpoint(f"offset commit failed: {e}") from e
        # 3. Tasks apply their state and tell their participants.
        for task in tasks:
            task.committed()
        self.work_pending = False
        self.last_commit_seconds = time.monotonic() - t0
        metrics.CHECKPOINTS.inc()
        metrics.CHECKPOINT_SECONDS.observe(self.last_commit_seconds)
        metrics.LAST_CHECKPOINT.set(time.time())
        c = self.collector
        metrics.CHECKPOINT_RECORDS.observe(self.input_records)
        metrics.CHECKPOINT_STATE_RECORDS.observe(c.state_records)
        metrics.CHECKPOINT_STATE_BYTES.observe(c.state_bytes)
        self.input_records = c.state_records = c.state_bytes = 0
        return True

    def _txn_call(self, fn: Any, what: str, retry: bool = False) -> None:
        """One transactional call, bounded. A call that times out (librdkafka's ``_TIMED_OUT``
        or no return at all) makes the producer unusable: FatalClientError, so the member
        builds a new one. Why a timed-out EndTxn is never retried: without KIP-890 (not in
        librdkafka) the outcome is unknown and a retry from the same producer can let a late
        write land in the next transaction; ``init_transactions`` of a new producer instead
        makes the coordinator finish the open transaction one way or the other, and the
        member resumes from the committed offsets and changelogs, which agree with it
        whichever way it went (docs/architecture.md, "Broker and coordinator outages")."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                call_with_deadline(fn, self.timeout + self.slack, what)
                return
            except CallTimedOut as e:
                raise FatalClientError(f"{e}; abandoning the producer") from e
            except KafkaException as e:
                kind = classify(e)
                if kind == "fatal" or e.args[0].code() == KafkaError._TIMED_OUT:
                    raise FatalClientError(f"{what}: {e}") from e
                if kind == "retriable" and retry and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise AbortCheckpoint(f"{what}: {e}") from e

    def abort(self, tasks: Iterable[CheckpointTask]) -> dict[TP, int]:
        """Abort the transaction (EOS) and the tasks' checkpoint; returns where their inputs
        rewind (the caller seeks there). Raises FatalClientError when the transaction cannot
        be aborted (the tasks have dropped their buffers then too)."""
        tasks = list(tasks)
        metrics.CHECKPOINT_ABORTS.inc()
        failed: BaseException | None = None
        if self.exactly_once and self.in_transaction:
            try:
                call_with_deadline(lambda: self.producer.abort_transaction(self.timeout),
                                   self.timeout + self.slack, "abort_transaction")
            except (KafkaException, CallTimedOut) as e:
                # A transaction we cannot abort is aborted by the coordinator when a new producer
                # with our transactional.id initializes (or when it times out): rebuild.
                failed = e
            self.in_transaction = False
        rewind: dict[TP, int] = {}
        for task in tasks:
            rewind.update(task.aborted())
        self.work_pending = False
        self.input_records = 0
        self.collector.delivery_failed = None
        self.collector.state_records = self.collector.state_bytes = 0
        if failed is not None:
            raise FatalClientError(f"abort_transaction: {failed}") from failed
        return rewind

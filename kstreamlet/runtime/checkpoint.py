"""The checkpoint: the one place where progress becomes durable.

Exactly-once (Kafka EOS v2, KIP-447): a checkpoint is one Kafka transaction. Outputs are
produced inside it as records are processed; :meth:`Checkpointer.commit` lets every
participant add its records (changelogs, sink committables: :class:`Participant`), sends
the consumed offsets with ``send_offsets_to_transaction`` and commits. On an abortable
error the transaction is aborted and the consumer rewinds to the first offset of the
checkpoint, so the records are processed again in a new transaction.

At-least-once: outputs are produced by an idempotent producer; :meth:`commit` flushes
it, and only when every output is acknowledged commits the consumed offsets.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from kstreamlet import metrics
from kstreamlet.runtime.deadline import CallTimedOut, call_with_deadline

log = structlog.get_logger("kstreamlet.checkpoint")

TP = tuple[str, int]

#: Seconds a transactional call may run past its own librdkafka timeout before it is
#: abandoned (librdkafka normally returns ``_TIMED_OUT`` first; see runtime/deadline.py).
CALL_SLACK = 5.0


class Participant(Protocol):
    """Something whose work must commit or abort together with a checkpoint."""

    def prepare_commit(self) -> None:
        """Before the Kafka commit: produce changelog/committable records into the transaction."""

    def committed(self) -> None:
        """After the Kafka commit succeeded."""

    def aborted(self) -> None:
        """After an abort: drop everything buffered since the last commit."""


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
    """Tracks what the current checkpoint covers and commits or aborts it."""

    def __init__(self, consumer: Consumer, producer: Producer, exactly_once: bool, timeout: float = 60.0) -> None:
        self.consumer = consumer
        self.producer = producer
        self.exactly_once = exactly_once
        self.timeout = timeout
        #: How long a call may run past ``timeout`` before it is abandoned (shutdown lowers it).
        self.slack = CALL_SLACK
        #: Next offset to commit per partition (offset of the last processed record + 1).
        self.pending: dict[TP, int] = {}
        #: First offset processed per partition since the last commit: where a rewind seeks.
        self.base: dict[TP, int] = {}
        self.in_transaction = False
        self.participants: list[Participant] = []
        #: ALO: set by the producer's error-only delivery callback.
        self.delivery_failed: KafkaError | None = None
        self.commits = 0
        self.aborts = 0
        self.last_commit_seconds = 0.0
        #: Optional ``(topic, partition) -> metadata`` committed with each offset (stream time).
        self.offset_metadata: Any = None
        #: Work without consumed records wants a commit (a due tick: fired timers, an idle task's
        #: watermark record). Under EOS the open transaction says so; at-least-once needs this.
        self.work_pending = False

    def begin(self) -> None:
        if self.exactly_once and not self.in_transaction:
            try:
                self.producer.begin_transaction()
            except KafkaException as e:
                raise FatalClientError(str(e)) from e
            self.in_transaction = True

    @property
    def dirty(self) -> bool:
        return bool(self.pending) or self.in_transaction or self.work_pending

    def commit(self) -> None:
        """Commit the current checkpoint. Raises AbortCheckpoint or FatalClientError."""
        if not self.dirty:
            return
        t0 = time.monotonic()
        meta = self.offset_metadata
        if meta is None:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.pending.items()]
        else:
            offsets = []
            for (t, p), o in self.pending.items():
                md = meta(t, p)
                offsets.append(TopicPartition(t, p, o) if md is None else TopicPartition(t, p, o, md))
        if self.exactly_once:
            self.begin()
            for part in self.participants:
                part.prepare_commit()
            group = self.consumer.consumer_group_metadata()
            self._txn_call(lambda: self.producer.send_offsets_to_transaction(offsets, group, self.timeout),
                           "send_offsets_to_transaction")
            self._txn_call(lambda: self.producer.commit_transaction(self.timeout), "commit_transaction", retry=True)
            self.in_transaction = False
            self.producer.poll(0)  # serve delivery reports (changelog offsets) before participants read them
        else:
            for part in self.participants:
                part.prepare_commit()
            remaining = self.producer.flush(self.timeout)
            if remaining or self.delivery_failed is not None:
                err, self.delivery_failed = self.delivery_failed, None
                raise AbortCheckpoint(f"{remaining} outputs unacknowledged, delivery error: {err}")
            if offsets:
                try:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
                except KafkaException as e:
                    raise AbortCheckpoint(f"offset commit failed: {e}") from e
        for part in self.participants:
            part.committed()
        for (topic, _), off in self.pending.items():
            metrics.RECORDS_IN.labels(topic).inc(off - self.base.get((topic, _), off))
        self.pending.clear()
        self.base.clear()
        self.work_pending = False
        self.commits += 1
        self.last_commit_seconds = time.monotonic() - t0
        metrics.CHECKPOINTS.inc()
        metrics.CHECKPOINT_SECONDS.observe(self.last_commit_seconds)

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

    def abort(self, assigned: set[TP]) -> dict[TP, int]:
        """Abort the transaction (EOS), forget the checkpoint and return where to rewind.

        Returns the base offsets of partitions still assigned; the caller seeks there.
        """
        self.aborts += 1
        metrics.CHECKPOINT_ABORTS.inc()
        if self.exactly_once and self.in_transaction:
            try:
                call_with_deadline(lambda: self.producer.abort_transaction(self.timeout),
                                   self.timeout + self.slack, "abort_transaction")
            except (KafkaException, CallTimedOut) as e:
                # A transaction we cannot abort is aborted by the coordinator when a new producer
                # with our transactional.id initializes (or when it times out): rebuild.
                self.in_transaction = False
                for part in self.participants:
                    part.aborted()
                raise FatalClientError(f"abort_transaction: {e}") from e
            self.in_transaction = False
        for part in self.participants:
            part.aborted()
        rewind = {tp: off for tp, off in self.base.items() if tp in assigned}
        self.pending.clear()
        self.base.clear()
        self.work_pending = False
        self.delivery_failed = None
        return rewind

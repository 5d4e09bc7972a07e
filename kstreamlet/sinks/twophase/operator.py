"""The runtime side of two-phase-commit sinks: one operator per task, a checkpoint participant.

``stream.sink(sink, name)`` attaches a :class:`TwoPhaseCommitSinkNode`. Every task (one
partition of the sub-topology) compiles it into a :class:`SinkOperator` holding its own
copy of the sink, and registers that operator as a participant of the task's checkpoints:

``prepare_commit``  ``sink.pre_commit(txn)`` → committable, stored as JSON (a versioned
                    :class:`StoredCommittable`) in the task's state store ``<name>-2pc``
                    under one key. The store's changelog is written inside the
                    checkpoint's Kafka transaction, so the committable commits atomically
                    with the consumed offsets.
``committed``       ``sink.commit(committable)``, retried with backoff until it succeeds
                    (the Kafka side is final, so giving up is not an option); then the
                    record is marked ``committed`` (buffered into the next checkpoint).
``aborted``         ``sink.abort(txn)``; the records are replayed by the runtime.
``recover``         once per assignment, after the store is restored: commit the stored
                    committable unless it is marked committed (the process died after the
                    Kafka commit), then ``sink.recover(committable)`` rolls back the rest.

Why a "committed" mark instead of deleting the record: the record also carries what the
sink needs to resume (the checkpoint sequence that names XA transactions, the file sink's
part counters and in-progress file lengths). The mark only saves a needless second commit
on recovery; committing twice is harmless because ``commit`` is idempotent.

State (:class:`SinkState`): ``RECOVERING`` until :meth:`SinkOperator.recover` ran, then
``OPEN`` (records go straight to the sink). A sink error makes it ``BROKEN`` until the
checkpoint aborted; an abort this sink caused makes it ``BACKING_OFF``: the next record or
timer waits out the backoff, then it is ``OPEN`` again. Between ``prepare_commit`` and
``committed``/``aborted`` the checkpoint's transaction is a :class:`PendingCommit`.

Errors from the sink (:class:`~kstreamlet.sinks.SinkError` from ``write`` or the
timer hook, anything from ``pre_commit``) fail the checkpoint: ``prepare_commit`` raises
:class:`~kstreamlet.runtime.checkpoint.AbortCheckpoint`, which the member loop handles by
aborting the transaction and replaying from the last commit (writes after the failure are
skipped: they would be rolled back anyway). Repeated failures back off exponentially (up to
5 s) so an unavailable database is not hammered. Other exceptions from ``write`` concern
the record and follow the app's error policy.
"""

from __future__ import annotations

import copy
import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from kstreamlet.errors import TopologyError
from kstreamlet.runtime.checkpoint import AbortCheckpoint
from kstreamlet.runtime.faults import maybe_crash
from kstreamlet.runtime.timers import PROC, TimerService
from kstreamlet.sinks.twophase.protocol import RecordMetadata, SinkContext, SinkError, backoff_delay, sleep_backoff
from kstreamlet.topology.nodes import Node, Push

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices

log = structlog.get_logger("kstreamlet.sinks")

#: Longest wait before retrying a sink that failed (seconds).
MAX_BACKOFF = 5.0

#: The single key of the sink's store, holding a :class:`StoredCommittable` as JSON.
STATE_KEY = b"2pc"

#: Layout version of the stored record written now; records without one are version 1.
COMMITTABLE_VERSION = 1

_REQUIRED = ("open", "begin_transaction", "write", "pre_commit", "commit", "abort", "recover", "close")


class TwoPhaseCommitSinkNode(Node):
    """Topology node of a two-phase-commit sink (a leaf: it has no children)."""

    kind = "sink2pc"

    def __init__(self, sink: Any, name: str | None = None) -> None:
        missing = [m for m in _REQUIRED if not callable(getattr(sink, m, None))]
        if missing:
            raise TypeError(
                f"{type(sink).__name__} is not a two-phase-commit sink: it lacks {missing}; "
                "subclass kstreamlet.sinks.TwoPhaseCommitSink"
            )
        super().__init__(name)
        self.sink = sink
        interval = sink.processing_time_interval() if callable(getattr(sink, "processing_time_interval", None)) else None
        self.check_interval_ms: int | None = max(1, int(interval * 1000)) if interval else None
        # A task with processing-time timers is "timed": the member ticks it and, under
        # exactly-once, opens a transaction for what the timer does — so an idle app still
        # checkpoints and e.g. finishes inactive part files.
        self.uses_processing_time = self.check_interval_ms is not None

    @property
    def store_name(self) -> str:
        """Name of the store holding the committable (changelog ``<app>-<name>-2pc-changelog``)."""
        return f"{self.name}-2pc"

    @property
    def timer_store_name(self) -> str:
        return f"{self.name}-2pc-timers"

    def add_child(self, child: Node) -> Node:
        raise TopologyError(f"{self.name} is a sink; nothing can be attached downstream of it")

    def compile(self, task: "TaskServices") -> Push:
        op = SinkOperator(self, task)
        task.add_participant(op)
        return op.push


def _settings_of(task: "TaskServices") -> Any:
    """The app settings (every task carries them: TaskServices.settings)."""
    if task.settings is None:
        raise RuntimeError("a sink task needs the app settings (Task(settings=...))")
    return task.settings


class SinkState(enum.Enum):
    """Where a task's sink operator is (see module docs)."""

    #: Before :meth:`SinkOperator.recover`: nothing may be written, checkpoints skip the sink.
    RECOVERING = "recovering"
    #: Records go straight to the sink (the one state push() checks for).
    OPEN = "open"
    #: A write failed: the rest of this checkpoint is skipped and prepare_commit aborts it.
    BROKEN = "broken"
    #: This sink caused the last abort: the replay waits until ``retry_at`` before touching it.
    BACKING_OFF = "backing_off"


RECOVERING, OPEN, BROKEN, BACKING_OFF = SinkState.RECOVERING, SinkState.OPEN, SinkState.BROKEN, SinkState.BACKING_OFF


@dataclass(frozen=True)
class StoredCommittable:
    """The record in the sink's store: the last pre-committed checkpoint and whether its sink
    commit is done. ``seq`` also tells the next owner where checkpoint sequences resume."""

    seq: int
    committable: Any
    committed: bool = False
    version: int = COMMITTABLE_VERSION

    def encode(self) -> bytes:
        return orjson.dumps({"version": self.version, "seq": self.seq, "committable": self.committable,
                             "committed": self.committed})

    @classmethod
    def decode(cls, raw: bytes) -> "StoredCommittable":
        rec = orjson.loads(raw)
        version = int(rec.get("version", 1))  # written before records had a version: the same layout
        if version > COMMITTABLE_VERSION:
            raise RuntimeError(f"the sink's stored committable has version {version}, newer than this kstreamlet "
                               f"reads ({COMMITTABLE_VERSION}); run a kstreamlet at least as new as the one that wrote it")
        return cls(int(rec["seq"]), rec["committable"], bool(rec.get("committed")), version)


@dataclass(slots=True)
class PendingCommit:
    """A checkpoint between ``prepare_commit`` and ``committed``/``aborted``."""

    #: The sink transaction ``pre_commit`` ran on (``aborted`` hands it to ``sink.abort``).
    txn: Any
    seq: int
    #: What ``pre_commit`` returned; None: nothing to commit in this checkpoint.
    committable: Any
    #: Whether this checkpoint's store write carries (or supersedes) the pending "committed" mark.
    covers_mark: bool


class SinkOperator:
    """One task's copy of a sink, driven through the task's checkpoints (see module docs)."""

    def __init__(self, node: TwoPhaseCommitSinkNode, task: "TaskServices") -> None:
        self.node = node
        self.task = task
        self.name = node.name
        self.sink = copy.copy(node.sink)
        self.store = task.store(node.store_name)
        settings = _settings_of(task)
        self.ctx = SinkContext(
            partition=task.partition, application_id=settings.application_id, sink_name=node.name,
            task_id=task.id, processing_guarantee=settings.processing_guarantee, clock=task.clock,
            _record=self._record_metadata,
        )
        self.log = log.bind(sink=node.name, task=task.id)
        self.state = RECOVERING
        #: ``state is OPEN``, kept by :meth:`_to`: the one check push() makes per record.
        self._open = False
        #: The error that doomed the current checkpoint (BROKEN; raised at prepare_commit).
        self.error: BaseException | None = None
        #: ``time.monotonic()`` before which a replay must not touch the sink (BACKING_OFF).
        self.retry_at = 0.0
        #: Whether this sink caused the current checkpoint to fail (a write or the pre-commit).
        self.failed = False
        #: Aborts in a row this sink caused (the backoff grows with it).
        self.failures = 0
        self.opened = False
        #: The open transaction of the current checkpoint (None until its first write).
        self.txn: Any = None
        self.txn_seq = 0
        self.next_seq = 0
        self.pending: PendingCommit | None = None
        #: The "committed" mark still to be persisted (written by the next checkpoint that has no
        #: newer committable).
        self.mark: bytes | None = None
        #: Whether the current checkpoint wrote anything (for fault injection).
        self.wrote = False
        self._msg: Any = None
        self._index = -1
        self.timers: TimerService | None = None
        self.timer_at: int | None = None
        if node.check_interval_ms is not None:
            self.timers = TimerService(task.store(node.timer_store_name), lambda: b"",
                                       lambda: task.watermark, task.clock)
            task.register_timers(self.timers, self._on_timer)
        self._write = self.sink.write

    def _to(self, state: SinkState) -> None:
        self.state = state
        self._open = state is OPEN

    @property
    def recovered(self) -> bool:
        """Whether :meth:`recover` ran (records may be written)."""
        return self.state is not RECOVERING

    # --- per record --------------------------------------------------------------------------------

    def _record_metadata(self) -> RecordMetadata | None:
        m = self._msg
        if m is None:
            return None
        return RecordMetadata(m.topic(), m.partition(), m.offset(), self._index)

    def push(self, key: Any, value: Any, ts: int) -> None:
        if not self._open:
            state = self.state
            if state is BACKING_OFF:
                self._wait_backoff()
            elif state is BROKEN or self.error is not None:
                return  # this checkpoint aborts at prepare_commit and is replayed; skip the work
            else:
                # The member pauses a task's inputs until it is restored and recovered.
                self._break(RuntimeError("record received before recovery"))
                return
        m = self.task.msg
        if m is not self._msg:
            self._msg = m
            self._index = 0
        else:
            self._index += 1
        txn = self.txn
        try:
            if txn is None:
                txn = self._begin()
            self._write(txn, value, key, ts)
        except SinkError as e:
            # Not raised from here: the member computes where to rewind from the records it
            # finished, so an exception in the middle of a fetched batch could skip records.
            # The checkpoint is failed at prepare_commit instead, where the rewind is exact.
            self._break(e)
            return
        self.wrote = True
        if self.timers is not None and self.timer_at is None:
            self._register_timer(self.task.clock())

    def _wait_backoff(self) -> None:
        # A deadline rather than a sleep in aborted(): tasks that failed together wait once.
        delay = self.retry_at - time.monotonic()
        self.retry_at = 0.0
        self._to(OPEN)
        if delay > 0:
            self.log.info("sink backing off before the replay", seconds=round(delay, 3), failures=self.failures)
            time.sleep(delay)

    def _break(self, e: BaseException) -> None:
        self.error = e
        self.failed = True
        if self.state is not RECOVERING:  # before recovery it is BROKEN once recovered
            self._to(BROKEN)
        self.log.warning("sink failed; the checkpoint will abort and be replayed", error=repr(e))

    def _begin(self) -> Any:
        self.txn_seq = self.next_seq
        self.next_seq += 1
        self.ctx.checkpoint_id = self.txn_seq
        self.txn = self.sink.begin_transaction()
        return self.txn

    # --- processing time --------------------------------------------------------------------------

    def _register_timer(self, now: int) -> None:
        assert self.timers is not None and self.node.check_interval_ms is not None
        self.timer_at = now + self.node.check_interval_ms
        self.timers.register_processing_time(self.timer_at)

    def _on_timer(self, ts: int, key: bytes, domain: str) -> None:
        self.timer_at = None
        state = self.state
        if state is RECOVERING or state is BROKEN:
            return
        if state is BACKING_OFF:
            self._wait_backoff()
        now = self.task.clock()
        try:
            txn = self.txn if self.txn is not None else self._begin()
            again = self.sink.on_processing_time(txn, now)
        except SinkError as e:
            self._break(e)
            return
        if again:
            self._register_timer(now)

    # --- checkpoint participant ---------------------------------------------------------------------

    def prepare_commit(self) -> None:
        if self.state is RECOVERING:
            return  # still restoring: nothing was written
        if self.state is BROKEN:
            raise AbortCheckpoint(f"sink {self.name}: {self.error}") from self.error
        try:
            txn = self.txn if self.txn is not None else self._begin()
            seq = self.txn_seq
            committable = self.sink.pre_commit(txn)
            record = None if committable is None else StoredCommittable(seq, committable).encode()
        except Exception as e:
            self.failed = True
            self.log.warning("sink pre-commit failed; the checkpoint is aborted and replayed", error=repr(e))
            raise AbortCheckpoint(f"sink {self.name}: pre-commit failed: {e!r}") from e
        self.txn = None
        if record is not None:
            # Written into the checkpoint's Kafka transaction by the store (it runs after us).
            self.store.put(STATE_KEY, record)
            covers = self.mark is not None  # the newer record supersedes the mark
        elif self.mark is not None:
            self.store.put(STATE_KEY, self.mark)
            covers = True
        else:
            covers = False
        self.pending = PendingCommit(txn, seq, committable, covers)
        if record is not None or self.wrote:
            self.wrote = False
            maybe_crash("after_prepare")

    def committed(self) -> None:
        if self.state is RECOVERING:
            return
        pending, self.pending = self.pending, None
        if pending is not None:
            if pending.covers_mark:
                self.mark = None
            if pending.committable is not None:
                maybe_crash("after_kafka_commit")
                self._commit_retrying(pending.committable)
                self.mark = StoredCommittable(pending.seq, pending.committable, committed=True).encode()
        self.failures = 0

    def aborted(self) -> None:
        if self.state is RECOVERING:
            return
        pending, self.pending = self.pending, None
        txn = pending.txn if pending is not None else self.txn
        self.txn = None
        self.error = None
        self.wrote = False
        self._msg, self._index = None, -1
        if txn is not None:
            try:
                self.sink.abort(txn)
            except Exception as e:  # what abort could not undo, recover() will (next assignment)
                self.log.warning("sink abort failed", error=repr(e))
        # The timer store drops this checkpoint's timer changes (it aborts after us): forget
        # ours and register afresh on the next write; an extra timer only costs a check.
        self.timer_at = None
        if self.failed:
            # This sink caused the abort: the replay waits before trying it again.
            self.failed = False
            self.retry_at = time.monotonic() + backoff_delay(self.failures, maximum=MAX_BACKOFF)
            self.failures += 1
            self._to(BACKING_OFF)
        elif self.state is BROKEN:
            self._to(OPEN)

    def _commit_retrying(self, committable: Any) -> None:
        """Commit until it succeeds: the Kafka transaction already committed, so the sink must
        follow. A stuck process is ended by the shutdown timeout; the next owner commits."""
        attempt = 0
        while True:
            try:
                self.sink.commit(committable)
                if attempt:
                    self.log.info("sink commit succeeded after retries", attempts=attempt + 1)
                return
            except Exception as e:
                self.log.warning("sink commit failed; retrying", attempt=attempt + 1, error=repr(e))
                sleep_backoff(attempt)
                attempt += 1

    def recover(self) -> None:
        raw = self.store.get(STATE_KEY)
        rec = StoredCommittable.decode(raw) if raw else None
        committable = rec.committable if rec is not None else None
        self.next_seq = rec.seq + 1 if rec is not None else 0
        attempt = 0
        while True:
            try:
                if not self.opened:
                    self.sink.open(self.ctx)
                    self.opened = True
                    self._write = self.sink.write  # a sink may pick its writer in open()
                if rec is not None and not rec.committed:
                    # The process died after the Kafka commit and before (or while) committing the sink.
                    self.sink.commit(committable)
                    rec = StoredCommittable(rec.seq, committable, committed=True)
                    self.mark = rec.encode()
                    self.log.info("sink committed a checkpoint left uncommitted by the previous owner", seq=rec.seq)
                self.sink.recover(committable)
                break
            except SinkError as e:
                self.log.warning("sink recovery failed; retrying", attempt=attempt + 1, error=repr(e))
                sleep_backoff(attempt)
                attempt += 1
        self._to(BROKEN if self.error is not None else OPEN)
        if self.timers is not None:
            self.timer_at = self.timers.next_due(PROC)
            if self.timer_at is None:
                self._register_timer(self.task.clock())  # recovered in-progress work may need time checks
        self.log.info("sink recovered", seq=self.next_seq, had_committable=rec is not None)

    def close(self) -> None:
        self.sink.close()


__all__ = ["TwoPhaseCommitSinkNode", "SinkOperator", "SinkState", "PendingCommit", "StoredCommittable",
           "STATE_KEY", "COMMITTABLE_VERSION", "MAX_BACKOFF"]

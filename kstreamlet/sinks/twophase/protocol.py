"""The two-phase-commit sink protocol (Flink's ``TwoPhaseCommitSinkFunction``), driven by the runtime.

A sink never decides *when* to commit. The runtime
(:class:`kstreamlet.sinks.twophase.operator.SinkOperator`) gives every task (one partition
of a sub-topology) its own copy of the sink (``copy.copy``, then :meth:`open`) and drives
it through each checkpoint:

1. :meth:`~TwoPhaseCommitSink.begin_transaction` — start collecting this checkpoint's
   writes (must be cheap: open external transactions lazily, on the first write).
2. :meth:`~TwoPhaseCommitSink.write` — once per record.
3. :meth:`~TwoPhaseCommitSink.pre_commit` — make the writes durable but invisible
   (``XA PREPARE``; in-progress file → pending) and return a JSON-serializable
   *committable* describing how to finish them. The runtime stores it in a state store,
   so it is written into **the same Kafka transaction** as the consumed offsets.
4. :meth:`~TwoPhaseCommitSink.commit` — after the Kafka transaction committed: make the
   writes visible (``XA COMMIT``; pending file → finished). Retried with backoff until it
   succeeds, so it must be idempotent.
5. :meth:`~TwoPhaseCommitSink.abort` — the checkpoint failed: drop everything since the
   last committed checkpoint; its records are replayed.

After a crash or a rebalance the new owner of the partition restores the store, commits
the stored committable if it was not yet marked done, then calls
:meth:`~TwoPhaseCommitSink.recover` with the last committable (or ``None``) so the sink
rolls back whatever was prepared for this partition and is not that committable.

Errors: raise :class:`SinkUnavailableError` for transient trouble (connection lost, server
down): the checkpoint aborts and is replayed, ``commit``/``recover`` are retried with
backoff. :class:`SinkWriteError` means the external system rejected a batch: the
checkpoint aborts and replays too. Any other exception raised by ``write`` is a problem
with that record and goes to the app's error policy (dead-letter topic, skip or fail).

Example (a sink that appends to a list and makes it visible on commit)::

    class ListSink(TwoPhaseCommitSink):
        def open(self, ctx):
            self.visible, self.prepared = [], {}
        def begin_transaction(self):
            return []
        def write(self, txn, value, key, timestamp):
            txn.append(value)
        def pre_commit(self, txn):
            if not txn:
                return None          # nothing to commit in this checkpoint
            cid = f"{self.ctx.checkpoint_id}"
            self.prepared[cid] = list(txn)
            return {"id": cid}
        def commit(self, committable):
            self.visible.extend(self.prepared.pop(committable["id"], []))
        def abort(self, txn):
            txn.clear()
        def recover(self, committable):
            self.prepared.clear()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

Txn = TypeVar("Txn")


class SinkError(Exception):
    """Base class of the errors a sink raises to make the runtime abort the checkpoint."""


class SinkUnavailableError(SinkError):
    """Transient failure of the external system (connection lost, server down, timeout).

    The checkpoint is aborted and replayed; ``commit`` and ``recover`` are retried with
    backoff until the system answers again.
    """


class SinkWriteError(SinkError):
    """The external system rejected a batch (constraint, data type...). The checkpoint is
    aborted and replayed; if the data itself is bad it will fail again, as a Flink job
    restarts into the same failure — fix the data, the schema or the mapping."""


@dataclass(frozen=True)
class RecordMetadata:
    """Where the record being written came from: the input record of the task.

    ``index`` counts the sink writes caused by this one input record (0 for the first),
    so ``(topic, partition, offset, index)`` identifies a written row deterministically
    even after ``flat_map`` — replays produce the same identities.
    """

    topic: str
    partition: int
    offset: int
    index: int = 0


@dataclass
class SinkContext:
    """What :meth:`TwoPhaseCommitSink.open` receives; also kept as ``sink.ctx``."""

    #: Partition number of the task: sink work (files, XA transactions) is per partition.
    partition: int
    #: The app's ``application_id`` (consumer group); names XA transactions.
    application_id: str
    #: The sink operator's name (``stream.sink(sink, name=...)``); stable across restarts.
    sink_name: str
    #: ``<sub-topology>_<partition>``.
    task_id: str
    #: ``exactly_once`` or ``at_least_once``. The protocol is the same; under at-least-once
    #: the Kafka offsets are committed separately, so a crash can replay committed records.
    processing_guarantee: str
    #: The task's clock in epoch milliseconds (the test driver's wall clock in tests).
    clock: Callable[[], int]
    #: Sequence number of the checkpoint transaction being written. It grows monotonically
    #: and survives restarts (the runtime keeps it in the sink's state store), so it can
    #: name external transactions (XA xids).
    checkpoint_id: int = 0
    _record: Callable[[], RecordMetadata | None] = field(default=lambda: None, repr=False)

    def current_time_ms(self) -> int:
        """Processing time now (ms), from the task clock."""
        return self.clock()

    def record(self) -> RecordMetadata | None:
        """Metadata of the input record being written (None outside of ``write``)."""
        return self._record()


class TwoPhaseCommitSink(Generic[Txn]):
    """Base class of sinks that commit together with the app's checkpoints (see module docs).

    The user's instance is a template: each task gets ``copy.copy(sink)`` and calls
    :meth:`open` on it, so create connections, buffers and other per-task state in
    ``open``, not in ``__init__``.
    """

    #: Set by :meth:`open`.
    ctx: SinkContext

    def open(self, ctx: SinkContext) -> None:
        """Per-task initialisation (connections, buffers). Called once, before :meth:`recover`.

        It may replace ``self.write`` with a bound method specialised for this task (the
        runtime looks ``write`` up after ``open``), as :class:`~kstreamlet.sinks.FileSink` does."""
        self.ctx = ctx

    def begin_transaction(self) -> Txn:
        """Start a new transaction for the next checkpoint. Must be cheap; defer I/O to the first write."""
        raise TypeError(f"{type(self).__name__} must implement begin_transaction()")

    def write(self, txn: Txn, value: Any, key: Any, timestamp: int) -> None:
        """Add one record to ``txn``."""
        raise TypeError(f"{type(self).__name__} must implement write()")

    def pre_commit(self, txn: Txn) -> Any:
        """Make ``txn`` durable but not visible; return a JSON-serializable committable,
        or ``None`` when this checkpoint has nothing to commit."""
        raise TypeError(f"{type(self).__name__} must implement pre_commit()")

    def commit(self, committable: Any) -> None:
        """Make a pre-committed transaction visible. Idempotent: it may run again after a crash."""
        raise TypeError(f"{type(self).__name__} must implement commit()")

    def abort(self, txn: Txn) -> None:
        """Roll back ``txn`` (also when :meth:`pre_commit` already ran for it)."""
        raise TypeError(f"{type(self).__name__} must implement abort()")

    def recover(self, committable: Any | None) -> None:
        """After (re)assignment: ``committable`` is the last committed one (already committed
        by the runtime) or ``None``; roll back everything else prepared for this partition."""

    def close(self) -> None:
        """Release resources. Prepared-but-uncommitted work must survive (the next owner recovers it)."""

    # --- optional processing-time hook ----------------------------------------------------------

    def processing_time_interval(self) -> float | None:
        """Seconds between :meth:`on_processing_time` calls, or ``None`` (the default) if the
        sink needs none. The runtime then runs a processing-time timer per task, which also
        makes an idle app checkpoint (so e.g. inactive part files get finished)."""
        return None

    def on_processing_time(self, txn: Txn, now_ms: int) -> bool:
        """Processing time advanced (see :meth:`processing_time_interval`). Return whether the
        sink still needs another call later."""
        return False


def backoff_delay(attempt: int, initial: float = 0.1, maximum: float = 5.0) -> float:
    """``min(maximum, initial * 2**attempt)`` seconds: the wait before retry number ``attempt + 1``."""
    return min(maximum, initial * (2 ** min(attempt, 30)))


def sleep_backoff(attempt: int, initial: float = 0.1, maximum: float = 5.0) -> float:
    """Sleep :func:`backoff_delay` seconds; returns the delay."""
    d = backoff_delay(attempt, initial, maximum)
    time.sleep(d)
    return d


__all__ = [
    "TwoPhaseCommitSink", "SinkContext", "RecordMetadata",
    "SinkError", "SinkUnavailableError", "SinkWriteError", "backoff_delay", "sleep_backoff",
]

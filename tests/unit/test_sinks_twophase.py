"""The two-phase-commit sink operator on its own: its states through checkpoints, and the
stored committable's version (records written before it had one are read as version 1)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from kstreamlet.runtime.checkpoint import AbortCheckpoint
from kstreamlet.sinks import SinkUnavailableError, TwoPhaseCommitSink
from kstreamlet.sinks.twophase import PendingCommit, SinkOperator, SinkState, StoredCommittable, TwoPhaseCommitSinkNode
from kstreamlet.sinks.twophase.operator import COMMITTABLE_VERSION, STATE_KEY


class ListSink(TwoPhaseCommitSink[list]):
    """Appends to a list; fails the next write when ``fail`` is set."""

    def __init__(self) -> None:
        self.fail = False

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.visible: list[Any] = []
        self.prepared: dict[int, list[Any]] = {}
        self.commits: list[Any] = []
        self.recovered_with: list[Any] = []

    def begin_transaction(self) -> list:
        return []

    def write(self, txn: list, value: Any, key: Any, timestamp: int) -> None:
        if self.fail:
            raise SinkUnavailableError("down")
        txn.append(value)

    def pre_commit(self, txn: list) -> Any:
        if not txn:
            return None
        self.prepared[self.ctx.checkpoint_id] = list(txn)
        return {"id": self.ctx.checkpoint_id}

    def commit(self, committable: Any) -> None:
        self.commits.append(committable)
        self.visible.extend(self.prepared.pop(committable["id"], []))

    def abort(self, txn: list) -> None:
        txn.clear()

    def recover(self, committable: Any) -> None:
        self.recovered_with.append(committable)


class Store(dict):
    def put(self, k: bytes, v: bytes) -> None:
        self[k] = v


class Msg:
    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


def make(store: Store | None = None) -> SinkOperator:
    store = store if store is not None else Store()
    task = SimpleNamespace(
        partition=0, id="0_0", clock=lambda: 0, msg=Msg(), store=lambda name: store, collector=None,
        settings=SimpleNamespace(application_id="app", processing_guarantee="exactly_once"),
        add_participant=lambda p: None,
    )
    return SinkOperator(TwoPhaseCommitSinkNode(ListSink(), "s"), task)  # type: ignore[arg-type]


def test_states_through_a_failed_and_a_replayed_checkpoint() -> None:
    op = make()
    assert op.state is SinkState.RECOVERING and not op.recovered
    op.prepare_commit()  # still restoring: the checkpoint skips the sink
    assert op.pending is None
    op.recover()
    assert op.state is SinkState.OPEN and op.recovered, op.state
    op.push(None, "a", 0)
    op.prepare_commit()
    assert op.pending == PendingCommit(["a"], 0, {"id": 0}, False), op.pending
    op.committed()
    assert op.pending is None and op.sink.visible == ["a"], (op.pending, op.sink.visible)
    op.sink.fail = True
    op.push(None, "b", 0)
    assert op.state is SinkState.BROKEN and isinstance(op.error, SinkUnavailableError), op.state
    op.push(None, "c", 0)  # skipped: the checkpoint is doomed
    with pytest.raises(AbortCheckpoint):
        op.prepare_commit()
    op.aborted()
    assert op.state is SinkState.BACKING_OFF and op.error is None and op.retry_at > time.monotonic() - 1, op.state
    op.sink.fail = False
    op.retry_at = time.monotonic()  # the backoff is over
    op.push(None, "b", 0)
    assert op.state is SinkState.OPEN, op.state
    op.prepare_commit()
    op.committed()
    assert op.sink.visible == ["a", "b"], op.sink.visible
    assert op.failures == 0, "a committed checkpoint resets the failure count"


def test_stored_committable_carries_a_version_and_the_mark_follows() -> None:
    store = Store()
    op = make(store)
    op.recover()
    op.push(None, "a", 0)
    op.prepare_commit()
    rec = orjson.loads(store[STATE_KEY])
    assert rec == {"version": COMMITTABLE_VERSION, "seq": 0, "committable": {"id": 0}, "committed": False}, rec
    op.committed()
    op.prepare_commit()  # nothing written: the checkpoint persists the "committed" mark
    assert orjson.loads(store[STATE_KEY])["committed"] is True, store[STATE_KEY]
    assert op.pending is not None and op.pending.covers_mark
    op.committed()
    assert op.mark is None, "the mark is persisted once its checkpoint committed"


def test_an_unversioned_record_is_read_as_version_1_and_committed_on_recovery() -> None:
    old = orjson.dumps({"seq": 4, "committable": {"id": 4}, "committed": False})  # as written before versions
    assert StoredCommittable.decode(old) == StoredCommittable(4, {"id": 4}, False, 1)
    store = Store({STATE_KEY: old})
    op = make(store)
    op.recover()
    assert op.sink.commits == [{"id": 4}] and op.sink.recovered_with == [{"id": 4}], (op.sink.commits,
                                                                                   op.sink.recovered_with)
    assert op.next_seq == 5, op.next_seq
    assert op.mark is not None and orjson.loads(op.mark) == {
        "version": 1, "seq": 4, "committable": {"id": 4}, "committed": True}, op.mark


def test_a_record_from_a_newer_version_is_refused() -> None:
    newer = orjson.dumps({"version": COMMITTABLE_VERSION + 1, "seq": 1, "committable": {}, "committed": True})
    with pytest.raises(RuntimeError, match="newer"):
        StoredCommittable.decode(newer)


def test_a_record_before_recovery_dooms_the_first_checkpoint() -> None:
    op = make()
    op.push(None, "early", 0)
    assert op.state is SinkState.RECOVERING and op.error is not None, (op.state, op.error)
    op.recover()
    assert op.state is SinkState.BROKEN, op.state
    with pytest.raises(AbortCheckpoint, match="before recovery"):
        op.prepare_commit()
    op.aborted()
    assert op.state is SinkState.BACKING_OFF, op.state

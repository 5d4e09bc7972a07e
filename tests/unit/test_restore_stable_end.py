"""A store whose committed local offset is past its changelog's last stable offset (state/recovery.py):
wiped only when the changelog's high watermark is below it too (the topic was recreated); otherwise
the restore waits for the markers of the transaction still holding the last stable offset and,
past a bound, reports it as hanging and keeps the local state the committed offsets match."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition

from kstreamlet.state import recovery
from kstreamlet.state.factory import open_rocksdb
from kstreamlet.state.recovery import Restorer
from kstreamlet.state.store import Store


class Broker:
    """What the changelog partition looks like: last stable offsets served in turn, a high watermark."""

    def __init__(self, stable: list[int], high: int, records: list[Message] | None = None) -> None:
        self.stable, self.high, self.records = list(stable), high, list(records or [])
        self.reads: list[str] = []


class FakeConsumer:
    def __init__(self, broker: Broker, isolation: str) -> None:
        self.broker, self.isolation, self.pos = broker, isolation, -1001
        self.assigned: list[TopicPartition] = []

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        self.broker.reads.append(self.isolation)
        if self.isolation == "read_uncommitted":
            return 0, self.broker.high
        b = self.broker
        return 0, b.stable.pop(0) if len(b.stable) > 1 else b.stable[0]

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.assigned += tps

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Any]:
        out, self.broker.records = self.broker.records, []
        if out:
            self.pos = out[-1].offset() + 1
        return out

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(t.topic, t.partition, self.pos) for t in tps]

    def close(self) -> None:
        pass


def _setup(tmp_path: Path, broker: Broker, local_offset: int) -> tuple[Store, Restorer, list[FakeConsumer]]:
    store = Store("s", 0, open_rocksdb(tmp_path / "s", 8), "s-changelog", lambda *a: None)
    store.backend.write({b"k": struct.pack(">q", 7)}, local_offset)
    made: list[FakeConsumer] = []

    def make(cfg: dict[str, Any]) -> FakeConsumer:
        made.append(FakeConsumer(broker, cfg["isolation.level"]))
        return made[-1]

    return store, Restorer({}, make_consumer=make), made  # type: ignore[arg-type]


def test_the_markers_of_the_last_commit_are_awaited_and_the_local_state_kept(tmp_path: Path) -> None:
    rec = Message(topic="s-changelog", partition=0, offset=596, key=b"k", value=struct.pack(">q", 8))
    broker = Broker(stable=[557, 557, 597], high=597, records=[rec])
    store, r, _ = _setup(tmp_path, broker, 595)
    assert r.add("t", [store], exactly_once=True)
    while r.active:
        r.poll()
    assert store.backend.get(b"k") == struct.pack(">q", 8)  # local state + the record after it
    assert store.backend.changelog_offset() == 596
    store.close()


def test_a_hanging_transaction_is_reported_and_the_local_state_kept(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(recovery, "STABLE_WAIT", 0.5)
    broker = Broker(stable=[557], high=756)
    store, r, _ = _setup(tmp_path, broker, 595)
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(recovery.log, "error", lambda event, **kw: events.append({"event": event, **kw}))
    assert not r.add("t", [store], exactly_once=True)  # nothing it can restore
    assert store.backend.get(b"k") == struct.pack(">q", 7) and store.backend.changelog_offset() == 595
    assert [(e["last_stable_offset"], e["high_watermark"], e["local_offset"]) for e in events] == [(557, 756, 595)]
    store.close()


@pytest.mark.parametrize("high", [0, 300])
def test_a_changelog_behind_the_store_even_with_open_transactions_means_a_reset(tmp_path: Path, high: int) -> None:
    broker = Broker(stable=[min(high, 250)], high=high)
    store, r, _ = _setup(tmp_path, broker, 595)
    r.add("t", [store], exactly_once=True)
    assert getattr(store.backend, "closed")  # wiped (destroyed), without waiting for the last stable offset
    assert broker.reads.count("read_committed") == 1

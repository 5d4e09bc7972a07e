"""The restore path's bulk writes (state/recovery.py, state/rocksdb.py): records of several
changelogs interleaved in one slice land in the right stores with the right offsets, compactions
are paused while a RocksDB store restores and resumed after, and the restore consumer's large
fetch defaults yield to an explicit setting."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from kstreamlet.state import recovery
from kstreamlet.state.factory import open_rocksdb
from kstreamlet.state.recovery import Restorer
from kstreamlet.state.store import Store


class FakeConsumer:
    """Serves prepared slices of changelog messages; tracks positions as librdkafka would."""

    def __init__(self, ends: dict[tuple[str, int], int], slices: list[list[Any]]) -> None:
        self.ends, self.slices, self.pos = ends, list(slices), {}
        self.timeouts: list[float] = []

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        return 0, self.ends[(tp.topic, tp.partition)]

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        pass

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Any]:
        self.timeouts.append(timeout)
        out = self.slices.pop(0) if self.slices else []
        for m in out:
            if m.error() is None:
                self.pos[(m.topic(), m.partition())] = m.offset() + 1
        return out

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(t.topic, t.partition, self.pos.get((t.topic, t.partition), -1001)) for t in tps]

    def close(self) -> None:
        pass


def msg(topic: str, partition: int, offset: int, key: bytes, value: bytes | None) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value)


def test_interleaved_changelogs_land_in_their_stores_with_their_last_offsets(tmp_path: Path) -> None:
    stores = {(t, p): Store(t, p, open_rocksdb(tmp_path / f"{t}-{p}", 8), t, lambda *a: None)
              for t in ("a-changelog", "b-changelog") for p in (0, 1)}
    ends = {tp: 4 for tp in stores}
    slices = [
        # runs per partition, two topics with the same partition numbers, one error in between,
        # and a record of a partition nobody restores
        [msg("a-changelog", 0, 0, b"k1", b"a0-1"), msg("a-changelog", 0, 1, b"k2", b"a0-2"),
         msg("b-changelog", 0, 0, b"k1", b"b0-1"), msg("a-changelog", 1, 0, b"k1", b"a1-1"),
         Message(error=KafkaError(KafkaError._TRANSPORT)),
         msg("other", 0, 0, b"k1", b"zzz"), msg("b-changelog", 1, 0, b"k1", b"b1-1"),
         msg("a-changelog", 0, 2, b"k1", b"a0-3")],
        [msg("a-changelog", 0, 3, b"k2", None), msg("b-changelog", 0, 1, b"k2", b"b0-2"),
         msg("b-changelog", 0, 2, b"k2", b"b0-3"), msg("b-changelog", 0, 3, b"k3", b"b0-4"),
         msg("a-changelog", 1, 1, b"k2", b"a1-2"), msg("a-changelog", 1, 2, b"k2", b"a1-3"),
         msg("a-changelog", 1, 3, b"k3", b"a1-4"), msg("b-changelog", 1, 1, b"k2", b"b1-2"),
         msg("b-changelog", 1, 2, b"k2", b"b1-3"), msg("b-changelog", 1, 3, b"k3", b"b1-4")],
    ]
    fake = FakeConsumer(ends, slices)
    r = Restorer({}, make_consumer=lambda cfg: fake)  # type: ignore[arg-type, return-value]
    for tp, s in stores.items():
        assert r.add(tp, [s], exactly_once=True)
    done: list[Any] = []
    first = r.poll()
    assert first == []
    assert stores[("a-changelog", 0)].backend.changelog_offset() == 2
    assert stores[("b-changelog", 0)].backend.changelog_offset() == 0
    while r.active:
        done += r.poll()
    assert sorted(done) == sorted(stores)
    got = {tp: (s.backend.get(b"k1"), s.backend.get(b"k2"), s.backend.get(b"k3"), s.backend.changelog_offset())
           for tp, s in stores.items()}
    assert got == {
        ("a-changelog", 0): (b"a0-3", None, None, 3),  # k2 deleted by its tombstone
        ("a-changelog", 1): (b"a1-1", b"a1-3", b"a1-4", 3),
        ("b-changelog", 0): (b"b0-1", b"b0-3", b"b0-4", 3),
        ("b-changelog", 1): (b"b1-1", b"b1-3", b"b1-4", 3),
    }
    assert r.total_restored == 16
    for s in stores.values():
        s.close()


def test_compactions_are_paused_while_restoring_and_resumed_after(tmp_path: Path, monkeypatch: Any) -> None:
    store = Store("s", 0, open_rocksdb(tmp_path / "s", 8), "s-changelog", lambda *a: None)
    calls: list[str] = []
    backend: Any = store.backend
    real_set = backend._db.set_options

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_db, name)

        def set_options(self, opts: dict[str, str]) -> None:
            calls.append(opts["disable_auto_compactions"])
            real_set(opts)

    real_db = backend._db
    backend._db = Spy()
    fake = FakeConsumer({("s-changelog", 0): 2}, [[msg("s-changelog", 0, 0, b"k", struct.pack(">q", 1))], [],
                                                   [msg("s-changelog", 0, 1, b"k", struct.pack(">q", 2))]])
    r = Restorer({}, make_consumer=lambda cfg: fake)  # type: ignore[arg-type, return-value]
    assert r.add("t", [store], exactly_once=True)
    assert calls == ["true"]
    r.poll()
    assert calls == ["true"]  # still restoring
    r.poll()  # an empty slice: the next one waits a little for data instead of spinning
    r.poll()
    assert fake.timeouts == [0.0, 0.0, recovery.IDLE_WAIT]
    assert not r.active and calls == ["true", "false"]
    assert store.backend.get(b"k") == struct.pack(">q", 2)
    backend._db = real_db
    store.close()


def test_revoking_a_restoring_task_resumes_compactions(tmp_path: Path) -> None:
    store = Store("s", 0, open_rocksdb(tmp_path / "s", 8), "s-changelog", lambda *a: None)
    fake = FakeConsumer({("s-changelog", 0): 10}, [[msg("s-changelog", 0, 0, b"k", b"v")]])
    r = Restorer({}, make_consumer=lambda cfg: fake)  # type: ignore[arg-type, return-value]
    seen: list[bool] = []
    backend: Any = store.backend
    backend.begin_bulk_load = lambda: seen.append(True)
    backend.end_bulk_load = lambda: seen.append(False)
    r.add("t", [store], exactly_once=True)
    r.poll()
    r.remove_task("t")
    assert seen == [True, False] and not r.active
    store.close()


def test_restore_consumer_fetches_big_chunks_unless_configured() -> None:
    cfgs: list[dict[str, Any]] = []

    def make(cfg: dict[str, Any]) -> Any:
        cfgs.append(cfg)
        return FakeConsumer({}, [])

    Restorer({"bootstrap.servers": "x"}, make_consumer=make).consumer
    Restorer({"bootstrap.servers": "x", "max.partition.fetch.bytes": 1024}, make_consumer=make).consumer
    assert cfgs[0]["max.partition.fetch.bytes"] == 8 * 1024 * 1024 and cfgs[0]["fetch.max.bytes"] >= 8 * 1024 * 1024
    assert cfgs[1]["max.partition.fetch.bytes"] == 1024  # an explicit setting wins
    assert cfgs[0]["isolation.level"] == "read_committed"


def test_a_smaller_receive_limit_caps_the_restore_fetch_size_and_librdkafka_accepts_it() -> None:
    from confluent_kafka import Consumer

    cfg = Restorer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g",
                    "receive.message.max.bytes": 4 * 1024 * 1024})._config
    assert cfg["fetch.max.bytes"] == 4 * 1024 * 1024 - 512
    assert cfg["max.partition.fetch.bytes"] <= cfg["fetch.max.bytes"]
    Consumer(cfg).close()  # librdkafka validates fetch.max.bytes against receive.message.max.bytes here

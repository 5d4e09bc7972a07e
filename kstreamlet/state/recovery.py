"""Restoration of state stores from their changelog topics.

On assignment, each store of a new task is checked: the local DB's stored changelog
offset says where to resume (a store with data but no offset cannot be trusted under
exactly-once and is wiped; so is one whose offset lies beyond the changelog's end).
The restorer replays ``offset + 1 .. end`` (``read_committed``, end = last stable
offset) with its own consumer, a bounded slice per loop iteration, so tasks that are
restoring never block the others: their input partitions stay paused until done.

Bulk writes: a store's records of one slice go to RocksDB as one write batch (WAL off), its
automatic compactions are paused while it restores (:meth:`RocksDBBackend.begin_bulk_load`,
resumed once it is restored or revoked), and the restore consumer fetches in large chunks
(:data:`RESTORE_CONSUMER_DEFAULTS`). When its fetch queue is momentarily empty, a slice waits a
few milliseconds for data instead of returning at once, so that the member's loop does not spin
against the fetcher thread and the broker for the CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kstreamlet import metrics
from kstreamlet.runtime.topics import end_offset
from kstreamlet.state.store import Store

log = structlog.get_logger("kstreamlet.restore")

TP = tuple[str, int]

#: Restore consumer settings under the member's consumer configuration (an explicit setting in
#: ``kafka_config`` wins): large fetches, so that the fetcher keeps ahead of the RocksDB writes
#: (a changelog record is small; librdkafka's default is 1 MB per partition per fetch).
RESTORE_CONSUMER_DEFAULTS: dict[str, Any] = {
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "queued.min.messages": 500_000,
}
#: How long (s) a restore slice waits for data when the fetch queue is empty.
IDLE_WAIT = 0.005
#: How long (s) a restore waits for a changelog's last stable offset to reach the store's local
#: offset (the markers of the store's own last commit may still be on their way).
STABLE_WAIT = 10.0

@dataclass
class _Restoring:
    store: Store
    task_key: Any
    end: int
    restored: int = 0
    started: float = field(default_factory=time.monotonic)
    last_log: float = field(default_factory=time.monotonic)


class Restorer:
    """Replays changelogs into stores; reports tasks whose stores are all restored."""

    def __init__(self, consumer_config: dict[str, Any],
                 make_consumer: Callable[[dict[str, Any]], Consumer] = Consumer) -> None:
        self._config = {
            **RESTORE_CONSUMER_DEFAULTS,
            **consumer_config,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # Restoration reads to a known end: do not let the broker hold each fetch for 500 ms.
            "fetch.wait.max.ms": 10,
        }
        # librdkafka refuses fetch.max.bytes above receive.message.max.bytes - 512: a user's smaller
        # receive limit caps the default fetch size (a fetch size the user set is theirs to match).
        receive = consumer_config.get("receive.message.max.bytes")
        if receive is not None and "fetch.max.bytes" not in consumer_config:
            self._config["fetch.max.bytes"] = min(int(self._config["fetch.max.bytes"]), int(receive) - 512)
            self._config["max.partition.fetch.bytes"] = min(int(self._config["max.partition.fetch.bytes"]),
                                                            int(self._config["fetch.max.bytes"]))
        self._consumer: Consumer | None = None
        self.active: dict[TP, _Restoring] = {}
        self._tasks: dict[Any, set[TP]] = {}
        self.total_restored = 0
        self._make_consumer = make_consumer
        #: the last slice found no records (the next one waits IDLE_WAIT for some)
        self._starved = False

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = self._make_consumer(self._config)
        return self._consumer

    def end_offset(self, topic: str, partition: int, within: float = 30.0) -> int:
        """The changelog's end (last stable offset). While its leader moves (a broker down or
        restarting) the read is retried with backoff for up to ``within`` seconds; after that,
        or on any other error, the ``KafkaException`` is raised."""
        return end_offset(self.consumer, topic, partition, within)

    def add(self, task_key: Any, stores: list[Store], exactly_once: bool) -> bool:
        """Start restoring a task's stores; False when nothing needs restoring."""
        assign = []
        for store in stores:
            if store.changelog_topic is None:
                continue
            tp = (store.changelog_topic, store.partition)
            end = self.end_offset(*tp)
            offset = store.backend.changelog_offset()
            if offset is None and store.backend.has_data():
                reason = "no changelog offset" if exactly_once else None
                if reason:
                    self._wipe(store, reason)
            elif offset is not None and offset + 1 > end:
                offset, end = self._past_stable_end(store, tp, offset, end)
            start = offset + 1 if offset is not None else 0
            # Restore progress series exist from the assignment on (0 when nothing is to restore).
            metrics.RESTORED_RECORDS.labels(store.name)
            metrics.RESTORE_REMAINING.labels(store.name, str(store.partition)).set(max(0, end - start))
            if start >= end:
                continue
            self.active[tp] = _Restoring(store, task_key, end)
            _bulk(store, True)
            self._tasks.setdefault(task_key, set()).add(tp)
            assign.append(TopicPartition(tp[0], tp[1], start if offset is not None else OFFSET_BEGINNING))
            log.info("restoring store", store=store.name, partition=store.partition, start=start, end=end)
        if assign:
            self.consumer.incremental_assign(assign)
        return bool(assign)

    def _past_stable_end(self, store: Store, tp: TP, offset: int, end: int) -> tuple[int | None, int]:
        """The store's local offset is past the changelog's last stable offset ``end``. The store
        holds only committed writes, so either the changelog was deleted and recreated (an
        application reset: its high watermark is below the offset too) — the store is wiped
        (the offset returned is None) — or a transaction before the offset is not resolved yet: commit markers
        are written after the commit returns, and a broker restart delays them. Then the last
        stable offset is awaited for :data:`STABLE_WAIT` s; past that the transaction is
        reported as hanging and the local state, which the committed offsets match, is kept.
        Returns the local offset (None once wiped) and the changelog end to restore to."""
        high = self._high_watermark(*tp)
        if offset + 1 > high:
            self._wipe(store, f"local offset {offset} is beyond the changelog end {high}")
            return None, end
        deadline = time.monotonic() + STABLE_WAIT
        while offset + 1 > end and time.monotonic() < deadline:
            time.sleep(0.2)
            end = self.end_offset(*tp)
        if offset + 1 > end:
            log.error("a transaction holds the changelog's last stable offset below the store's committed offset: "
                      "it is open past the transaction timeout or left hanging by the broker (see "
                      "`kafka-transactions.sh find-hanging`); the local state is kept, and records of the "
                      "partition past that offset stay invisible to read_committed readers until it is resolved",
                      store=store.name, partition=store.partition, topic=tp[0], local_offset=offset,
                      last_stable_offset=end, high_watermark=high, waited_seconds=STABLE_WAIT)
        return offset, end

    def _high_watermark(self, topic: str, partition: int) -> int:
        """The changelog's end including records of unresolved transactions (read_uncommitted),
        from a short-lived consumer: asked only when a store is past the last stable offset."""
        c = self._make_consumer({**self._config, "isolation.level": "read_uncommitted"})
        try:
            return end_offset(c, topic, partition)
        finally:
            c.close()

    def _wipe(self, store: Store, reason: str) -> None:
        log.warning("wiping local state that cannot be trusted", store=store.name, partition=store.partition, reason=reason)
        store.reset()

    def is_restoring(self, task_key: Any) -> bool:
        return task_key in self._tasks

    def remove_task(self, task_key: Any) -> None:
        tps = self._tasks.pop(task_key, set())
        for tp in tps:
            r = self.active.pop(tp, None)
            if r is not None:
                _bulk(r.store, False)
        if tps and self._consumer is not None:
            self._consumer.incremental_unassign([TopicPartition(t, p) for t, p in tps])

    def poll(self, max_records: int = 20_000, timeout: float | None = None) -> list[Any]:
        """Apply up to ``max_records`` changelog records; return keys of tasks now fully restored.

        ``timeout`` (s): how long to wait for records; by default none while records keep coming,
        :data:`IDLE_WAIT` after a slice that found the fetch queue empty."""
        if not self.active:
            return []
        if timeout is None:
            timeout = IDLE_WAIT if self._starved else 0.0
        msgs = self.consumer.consume(max_records, timeout)
        self._starved = not msgs
        # One pass sorts the slice's messages by changelog partition; the store's backend then
        # reads key and value straight from them into one write batch (no per-record tuple or
        # dict). Records come in runs per partition: look the partition's list up once per run.
        batches: dict[TP, list[Any]] = {}
        active = self.active
        cur_tp: Any = None
        cur: list[Any] | None = None
        tp: Any
        for m in msgs:
            if m.error() is not None:
                continue
            tp = (m.topic(), m.partition())
            if tp != cur_tp:
                cur_tp = tp
                cur = batches.get(tp)
                if cur is None and tp in active:
                    cur = batches[tp] = []
            if cur is not None:
                cur.append(m)
        now = time.monotonic()
        for tp, recs in batches.items():
            r = active[tp]
            offset = cast(int, recs[-1].offset())
            r.store.restore(recs, offset)
            r.restored += len(recs)
            self.total_restored += len(recs)
            metrics.RESTORED_RECORDS.labels(r.store.name).inc(len(recs))
            metrics.RESTORE_REMAINING.labels(r.store.name, str(r.store.partition)).set(max(0, r.end - offset - 1))
            if now - r.last_log >= 5:
                r.last_log = now
                log.info("restore progress", store=r.store.name, partition=r.store.partition, restored=r.restored,
                         remaining=max(0, r.end - offset - 1))
        done_tasks = []
        if self.active:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in self.active])
            for pos in positions:
                tp = (pos.topic, pos.partition)
                r = self.active[tp]
                if pos.offset >= 0 and pos.offset >= r.end:
                    seconds = time.monotonic() - r.started
                    log.info("store restored", store=r.store.name, partition=r.store.partition, records=r.restored,
                             seconds=round(seconds, 3), records_per_second=int(r.restored / seconds) if seconds > 0 else None)
                    del self.active[tp]
                    _bulk(r.store, False)
                    metrics.RESTORE_REMAINING.labels(r.store.name, str(r.store.partition)).set(0)
                    self.consumer.incremental_unassign([TopicPartition(*tp)])
                    keys = self._tasks.get(r.task_key)
                    if keys is not None:
                        keys.discard(tp)
                        if not keys:
                            del self._tasks[r.task_key]
                            done_tasks.append(r.task_key)
        return done_tasks

    def close(self) -> None:
        for r in self.active.values():
            _bulk(r.store, False)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _bulk(store: Store, on: bool) -> None:
    """Pause (``on``) or resume a store backend's automatic compactions around its restoration
    (RocksDB only; a backend without ``begin_bulk_load`` is left alone). Never fails the restore:
    the pause is an optimisation."""
    backend = store.backend
    fn = getattr(backend, "begin_bulk_load" if on else "end_bulk_load", None)
    if fn is None or getattr(backend, "closed", False):
        return
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        log.warning("could not change the store's compaction setting", store=store.name, partition=store.partition,
                    bulk_load=on, error=str(e))

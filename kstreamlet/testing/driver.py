"""TopologyTestDriver: run an app's topology without a broker, deterministically.

It uses the same tasks and compiled nodes as the real runtime; only the Kafka consumer
and producer are replaced by in-memory topics. Records written to repartition topics are
fed back in right after the current one, as a broker would deliver them.

Partitions. A topic has one partition unless ``partitions={"clicks": 3}`` (constructor) or
``driver.input_topic("clicks", partitions=3)`` (before the first record) says otherwise;
repartition topics get the partition count the member would create (the largest of the
writing sub-topology's inputs). As in production there is a task per (sub-topology,
partition), *every* one of them exists and ticks — also the tasks of partitions that never
get a record — and records of a repartition topic are routed by murmur2 of the key bytes
(like the Java clients). ``pipe_input(..., partition=p)`` writes to a given partition;
otherwise the key decides (no key: partition 0). ``driver.pause(topic, p)`` holds the
records piped to a partition back (a *lagging* input: records are waiting, so it is not
idle) until ``driver.resume(topic, p)``.

Checkpoints. Every piped record (and every :meth:`TopologyTestDriver.advance_wall_clock_time`)
is its own checkpoint (unless piped inside ``with driver.one_checkpoint():``, which makes the block's
records one checkpoint, e.g. to see a record cache fold updates): outputs become readable when it commits, as for a ``read_committed``
consumer, and watermark records the tasks forward at the commit are processed after it. Error
policies apply as in production: with ``dlq`` a failing record (or timer call) appears in the
dead-letter topic with the same headers; a :class:`~kstreamlet.errors.ProcessingError`
(policy ``fail``) aborts the checkpoint — its state writes, timer deletions and outputs are
dropped, as a member's abort drops them — and propagates (a member would stop there; the
driver does not replay the aborted input). So does an ``AbortCheckpoint`` raised while processing
(e.g. ``SchemaRegistryUnavailable``: a member would abort and replay it, not dead-letter it).
Output records carry headers as a member writes them (``TestRecord.headers``; docs/headers-and-tracing.md).

Async operators (``map_async``, async ``process_element``) run on the driver's event loop: a
record's call starts when it is piped, completed results are released as later records arrive,
and every checkpoint waits until nothing is in flight. To have several calls in flight at once
(order modes, capacity), pipe inside ``with driver.one_checkpoint():`` — one checkpoint for all of its
records, committed (after the calls complete) when the block ends. With ``wait_for_async=False``
checkpoints commit as a member's do, with the calls in flight held in the operators' stores
(:meth:`TopologyTestDriver.restart` issues them again, :meth:`TopologyTestDriver.settle_async`
waits for them).

Restarts. :meth:`TopologyTestDriver.restart` is a crash after the last checkpoint and a new
owner taking over: fresh tasks on the committed contents of every store (what restoring the
changelogs gives) and the committed stream time, so timers, windows and state carry over and each
timer still fires once.

Example::

    from kstreamlet import App, serdes
    from kstreamlet.testing import TopologyTestDriver

    app = App(application_id="upper")
    app.stream("in", value_serde=serdes.STR).map(str.upper).to("out")

    with TopologyTestDriver(app) as driver:
        inp = driver.input_topic("in", value_serde=serdes.STR)
        out = driver.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input("hello", timestamp=1000)
        assert out.read_value() == "HELLO"
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from kstreamlet import serdes as _serdes
from kstreamlet.api.task import Record
from kstreamlet.errors import ProcessingError, TopologyError
from kstreamlet.runtime.async_io import AsyncRuntime
from kstreamlet.runtime.checkpoint import AbortCheckpoint
from kstreamlet.runtime.error_policy import ErrorHandler
from kstreamlet.runtime.task import Task
from kstreamlet.partitioner import partition_of
from kstreamlet.serdes import Serde
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.store import Store
from kstreamlet.topology.builder import plan_internal_partitions


@dataclass
class TestRecord:
    """A record as read from an output topic."""

    key: Any
    value: Any
    timestamp: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    __test__ = False  # not a pytest test class


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java clients (and librdkafka's ``murmur2``) choose for ``key``."""
    return partition_of(key, partitions)


class TestInputTopic:
    """Pipes records into one input topic of the driver."""

    __test__ = False

    def __init__(self, driver: "TopologyTestDriver", topic: str, key_serde: Serde[Any], value_serde: Serde[Any]):
        self._driver, self.topic = driver, topic
        self._ks, self._vs = key_serde.for_topic(topic, True), value_serde.for_topic(topic, False)

    def pipe_input(self, value: Any, key: Any = None, timestamp: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> None:
        """Send one record; ``timestamp`` (ms) defaults to the driver's wall-clock time;
        ``partition`` defaults to murmur2 of the key bytes (no key: partition 0)."""
        ts = self._driver.wall_clock_ms if timestamp is None else timestamp
        kb = self._ks.serialize(key) if key is not None else None
        self._driver._pipe(self.topic, kb, self._vs.serialize(value), ts, headers, partition)

    def pipe_values(self, values: list[Any], timestamp: int | None = None, advance_ms: int = 0,
                    partition: int | None = None) -> None:
        """Send values in order, ``advance_ms`` apart."""
        ts = self._driver.wall_clock_ms if timestamp is None else timestamp
        for v in values:
            self.pipe_input(v, timestamp=ts, partition=partition)
            ts += advance_ms


class TestOutputTopic:
    """Reads what the topology wrote to one topic, in order."""

    __test__ = False

    def __init__(self, driver: "TopologyTestDriver", topic: str, key_serde: Serde[Any], value_serde: Serde[Any]):
        self._driver, self.topic = driver, topic
        self._ks, self._vs = key_serde.for_topic(topic, True), value_serde.for_topic(topic, False)

    def _queue(self) -> deque[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]]]]:
        return self._driver._outputs.setdefault(self.topic, deque())

    def is_empty(self) -> bool:
        return not self._queue()

    def read_record(self) -> TestRecord:
        q = self._queue()
        if not q:
            raise AssertionError(f"expected a record in topic {self.topic!r}, but it is empty")
        k, v, ts, h = q.popleft()
        return TestRecord(self._ks.deserialize(k) if k is not None else None,
                          self._vs.deserialize(v) if v is not None else None, ts, h)

    def read_value(self) -> Any:
        return self.read_record().value

    def read_key_value(self) -> tuple[Any, Any]:
        r = self.read_record()
        return r.key, r.value

    def read_records_to_list(self) -> list[TestRecord]:
        out = []
        while not self.is_empty():
            out.append(self.read_record())
        return out

    def read_values_to_list(self) -> list[Any]:
        return [r.value for r in self.read_records_to_list()]

    def read_key_values_to_list(self) -> list[tuple[Any, Any]]:
        return [(r.key, r.value) for r in self.read_records_to_list()]


class TopologyTestDriver:
    """Broker-free driver for an :class:`~kstreamlet.App`'s topology (see module docs)."""

    def __init__(self, app: Any, wall_clock_ms: int | None = None, partitions: Mapping[str, int] | None = None,
                 wait_for_async: bool = True) -> None:
        self.app = app
        #: Whether a checkpoint first waits for the async calls in flight (their outputs are then
        #: readable after it). False: as a member, it commits with them held in the operators'
        #: stores; :meth:`restart` then issues them again (:meth:`settle_async` waits for them).
        self.wait_for_async = wait_for_async
        self.topology = app.topology()
        self.wall_clock_ms = int(time.time() * 1000) if wall_clock_ms is None else wall_clock_ms
        self._outputs: dict[str, deque[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]]]]] = {}
        #: Outputs of the current checkpoint, readable once it commits.
        self._staged: list[tuple[str, tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]]]]] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._pending: deque[Record] = deque()
        self._paused: dict[tuple[str, int], deque[Record]] = {}
        self._delivering = False
        #: Depth of :meth:`one_checkpoint` blocks: records are processed as piped, committed when the outer one ends.
        self._holding = 0
        self._partitions_given = dict(partitions or {})
        self.stores: dict[tuple[str, int], Store] = {}
        #: Committed offset metadata (stream time) per input partition, and the committed store
        #: contents a restart restores (what the changelogs would replay).
        self._committed_metadata: dict[tuple[str, int], str | None] = {}
        self._restore: dict[tuple[str, int], dict[bytes, bytes]] = {}
        s = app.settings
        # Tasks hand failing timer calls to the collector's ``errors`` (this driver).
        self.errors = ErrorHandler(s.error_policy, s.effective_dlq_topic, s.application_id, self._send_raw)
        self._internal = set(self.topology.internal_topics)
        self.tasks: dict[tuple[int, int], Task] = {}
        self._build_tasks()

    def _build_tasks(self) -> None:
        self.partition_counts = self._resolve_partitions()
        counts = self.partition_counts
        partitions_of = lambda topic: counts.get(topic, 1)  # noqa: E731
        forwarded = self.topology.forwarded_inputs(partitions_of)
        self.stores.clear()
        for st in self.topology.subtopologies:
            for p in range(partitions_of(next(iter(st.sources)))):
                self.tasks[(st.id, p)] = Task(
                    st, p, self, partitions_of, store_factory=self._make_store, clock=lambda: self.wall_clock_ms,
                    forwarded=forwarded, event_time=self.topology.uses_event_time, backlog=self._has_backlog,
                    settings=self.app.settings)
                for topic in st.sources:
                    md = self._committed_metadata.get((topic, p))
                    if md:
                        self.tasks[(st.id, p)].restore_stream_time(topic, md)
        for task in self.tasks.values():
            task.recover()
            task.snapshot_time()

    def _resolve_partitions(self) -> dict[str, int]:
        """Partition counts as the member's ``prepare_topics`` would make them: user topics as given
        (default 1), internal ones the largest of their writers' inputs, co-partitioned inputs equal."""
        counts = dict(self._partitions_given)
        topo = self.topology
        for st in topo.subtopologies:
            for t, src in st.sources.items():
                if not src.internal:
                    counts.setdefault(t, 1)
        counts.update(plan_internal_partitions(topo, lambda t: counts.get(t)))
        for st in topo.subtopologies:
            if len(st.sources) > 1:
                ns = {t: counts.get(t, 1) for t in st.sources}
                if len(set(ns.values())) > 1:
                    raise TopologyError(f"inputs of sub-topology {st.id} are not co-partitioned: partition counts {ns}")
        return counts

    def __enter__(self) -> "TopologyTestDriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        aio = AsyncRuntime.find(self)
        if aio is not None:
            aio.close()

    def close(self) -> None:
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()

    def async_runtime(self) -> AsyncRuntime | None:
        """The event loop of the topology's async operators (None without any)."""
        return AsyncRuntime.find(self)

    # --- topics ---------------------------------------------------------------------------------

    def input_topic(self, topic: str, key_serde: Serde[Any] | str | None = None,
                    value_serde: Serde[Any] | str | None = None, partitions: int | None = None) -> TestInputTopic:
        """``partitions``: the topic's partition count (before the first record is piped; the
        tasks are rebuilt for it)."""
        if partitions is not None and partitions != self.partition_counts.get(topic, 1):
            if self._offsets:
                raise ValueError(f"set the partition count of {topic!r} before piping records "
                                 "(or pass partitions= to the driver)")
            self._partitions_given[topic] = partitions
            self.close()
            self._build_tasks()
        return TestInputTopic(self, topic, _serdes.resolve(key_serde, _serdes.BYTES), _serdes.resolve(value_serde, _serdes.BYTES))

    def output_topic(self, topic: str, key_serde: Serde[Any] | str | None = None,
                     value_serde: Serde[Any] | str | None = None) -> TestOutputTopic:
        return TestOutputTopic(self, topic, _serdes.resolve(key_serde, _serdes.BYTES), _serdes.resolve(value_serde, _serdes.BYTES))

    def dlq_topic(self) -> TestOutputTopic:
        """The dead-letter topic, raw bytes (headers say what failed)."""
        return self.output_topic(self.app.settings.effective_dlq_topic)

    def pause(self, topic: str, partition: int = 0) -> None:
        """Hold back records piped to ``topic[partition]``: they wait (a backlog), as on a lagging
        or paused partition, so the input is not idle however long the wall clock advances."""
        self._paused.setdefault((topic, partition), deque())

    def resume(self, topic: str, partition: int = 0) -> None:
        """Deliver the records held back by :meth:`pause`, in order."""
        held = self._paused.pop((topic, partition), deque())
        for m in held:
            self._pending.append(m)
        self._drain()

    def _has_backlog(self, topic: str, partition: int) -> bool:
        return bool(self._paused.get((topic, partition)))

    # --- time -------------------------------------------------------------------------------------

    def advance_wall_clock_time(self, ms: int) -> None:
        """Move the driver's wall clock forward: processing-time timers fire, idle inputs time out
        (every task ticks, also those of partitions that never had a record), state TTL counts from
        it, and it is the default timestamp of piped records."""
        self.wall_clock_ms += ms

        def tick_all() -> None:
            for task in self.tasks.values():
                task.tick(self.wall_clock_ms)

        self._step_then_commit(tick_all)

    def _step_then_commit(self, step: Callable[[], None]) -> None:
        """Run ``step`` as part of the current checkpoint (what it sends is queued), then process
        and commit; anything escaping aborts the checkpoint."""
        self._delivering = True
        try:
            step()
        except BaseException:
            self._delivering = False
            self._abort()
            raise
        self._delivering = False
        self._drain()

    # --- state ------------------------------------------------------------------------------------

    def _make_store(self, name: str, partition: int) -> Store:
        backend = MemoryBackend()
        restored = self._restore.get((name, partition))
        if restored:
            backend.write(restored, None)
        store = Store(name, partition, backend, None, None, backend_factory=MemoryBackend)
        self.stores[(name, partition)] = store
        return store

    def restart(self) -> None:
        """As if every member crashed after the last checkpoint and new ones took over: the tasks
        are closed and built again (fresh copies of the functions, opened again) on the committed
        state of every store (what restoring the changelogs yields) and the committed stream time
        (offset metadata); what the current checkpoint had not committed is gone. Timers come back
        from their stores. Committed outputs stay readable."""
        self._abort()
        self._restore = {k: dict(s.backend.iter_from(b"")) for k, s in self.stores.items()}
        self.close()
        try:
            self._build_tasks()
        finally:
            self._restore = {}

    def key_value_store(self, name: str, partition: int | None = None) -> dict[bytes, bytes]:
        """Raw committed contents of a state store (store names: ``<operator name>-<state name>``);
        of one partition's task, or (default) of every partition merged."""
        if partition is not None:
            return dict(self.stores[(name, partition)].backend.iter_from(b""))
        found = [s for (n, _), s in sorted(self.stores.items(), key=lambda kv: kv[0][1]) if n == name]
        if not found:
            raise KeyError(name)
        out: dict[bytes, bytes] = {}
        for store in found:
            out.update(store.backend.iter_from(b""))
        return out

    def task(self, topic: str, partition: int = 0) -> Task:
        """The task reading ``topic[partition]``."""
        return self.tasks[(self.topology.subtopology_of(topic).id, partition)]

    def watermark(self, topic: str, partition: int = 0) -> int:
        """Current watermark of the task reading ``topic[partition]``."""
        return self.task(topic, partition).watermarks.watermark

    @contextmanager
    def one_checkpoint(self) -> Iterator[None]:
        """The records piped inside the ``with`` block are one checkpoint (as a member commits every
        ``commit_interval``): processed as they are piped (async calls start then; completed results
        are released as further records arrive), committed — async calls in flight awaited, outputs
        readable, record caches flushed — when the block ends; an error escaping the block aborts it::

            with driver.one_checkpoint():
                words.pipe_input("a", key="a")
                words.pipe_input("a", key="a")
            assert counts.read_key_values_to_list() == [("a", 2)]   # with a record cache
        """
        self._holding += 1  # nested blocks: the outer one is the checkpoint
        try:
            yield
        except BaseException:
            self._holding -= 1
            self._abort()
            raise
        self._holding -= 1
        if not self._holding:
            self._drain()

    def settle_async(self) -> None:
        """Wait for every async call in flight and commit their results (one checkpoint)."""
        aio = AsyncRuntime.find(self)
        if aio is not None:
            self._step_then_commit(aio.drain)

    def _commit(self) -> None:
        # Every piped record is its own checkpoint. Watermark records the tasks forward now are
        # queued and processed after it (in the next checkpoint), as downstream tasks would consume them.
        self._delivering = True
        try:
            aio = AsyncRuntime.find(self)
            if aio is not None and self.wait_for_async:
                aio.drain()
            for task in self.tasks.values():
                task.prepare_commit()
            for task in self.tasks.values():
                task.committed()
            for (st_id, p), task in self.tasks.items():
                # What a member commits with the offsets (the driver keeps no consumer offsets).
                for topic in task.subtopology.sources:
                    md = task.stream_time_metadata(topic)
                    if md:
                        self._committed_metadata[(topic, p)] = md
        finally:
            self._delivering = False
        for topic, rec in self._staged:
            self._outputs.setdefault(topic, deque()).append(rec)
        self._staged.clear()

    def _abort(self) -> None:
        """As a member's abort: the checkpoint's state writes, timer changes, stream time and
        outputs are dropped."""
        self._pending.clear()
        self._staged.clear()
        for task in self.tasks.values():
            task.aborted()

    # --- the collector the tasks write to -------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes | None, ts: int, partition: int,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        if topic in self._internal:
            self._deliver(topic, key, value, ts, list(headers) if headers else None, partition if partition >= 0 else None)
        else:
            self._staged.append((topic, (key, value, ts, list(headers) if headers else [])))

    def send_watermark(self, topic: str, partition: int, key: bytes, ts: int, headers: list[tuple[str, bytes]]) -> None:
        self._deliver(topic, key, None, ts, headers, partition)

    def _send_raw(self, topic: str, key: bytes | None, value: bytes | None, ts: int, headers: list[tuple[str, bytes]]) -> None:
        self._staged.append((topic, (key, value, ts, headers)))

    def _pipe(self, topic: str, key: bytes | None, value: bytes | None, ts: int,
              headers: list[tuple[str, bytes]] | None, partition: int | None) -> None:
        if topic in self.topology.broadcasts:
            for task in self.tasks.values():
                task.on_broadcast(topic, key, value, ts)
            self._drain()
            return
        self._deliver(topic, key, value, ts, headers, partition)

    def _deliver(self, topic: str, key: bytes | None, value: bytes | None, ts: int,
                 headers: list[tuple[str, bytes]] | None, partition: int | None = None) -> None:
        try:
            self.topology.subtopology_of(topic)
        except KeyError:
            raise KeyError(f"topic {topic!r} is not an input of this topology; inputs: {self.topology.source_topics}") from None
        n = self.partition_counts.get(topic, 1)
        if partition is None:
            partition = murmur2_partition(key, n) if key is not None else 0
        if not 0 <= partition < n:
            raise ValueError(f"topic {topic!r} has {n} partition(s); no partition {partition}")
        off = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = off + 1
        m = Record(topic, partition, off, key, value, ts, headers)
        held = self._paused.get((topic, partition))
        if held is not None:
            held.append(m)  # a backlog: delivered on resume()
            return
        self._pending.append(m)
        if self._delivering:
            return  # a repartitioned record: processed after the current one, as a broker would
        self._drain()

    def _drain(self) -> None:
        """Process the queued records and commit; again while the commit forwarded watermark records.
        Anything escaping (a ProcessingError under ``fail``) aborts the checkpoint first."""
        while True:
            self._delivering = True
            try:
                while self._pending:
                    m = self._pending.popleft()
                    task = self.tasks[(self.topology.subtopology_of(m.topic()).id, m.partition())]
                    try:
                        task.on_message[m.topic()](m)
                    except (ProcessingError, AbortCheckpoint):  # AbortCheckpoint: a member would replay
                        raise
                    except Exception as e:
                        self.errors.handle(m, e)
                    aio = AsyncRuntime.find(self)
                    if aio is not None:
                        aio.step()  # release what has completed meanwhile
                self._delivering = False
                if self._holding:
                    return
                self._commit()
            except BaseException:
                self._delivering = False
                self._abort()
                raise
            if not self._pending:
                return

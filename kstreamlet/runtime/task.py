"""A task: one sub-topology on one partition number.

It owns compiled copies of the sub-topology's nodes (so per-task state never leaks
between partitions), its state stores and timers, and its watermark. It turns each
input message into calls down the node chain. With several input topics
(co-partitioned, ``merge``) it buffers per input and always processes the buffered
record with the smallest timestamp first.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Protocol

from kstreamlet.eventtime import MIN_WATERMARK, WatermarkStrategy
from kstreamlet.runtime.timers import EVENT, PROC, TimerService
from kstreamlet.runtime.watermarks import (
    WATERMARK_HEADER,
    WATERMARK_KEY,
    WATERMARK_SOURCE_HEADER,
    WatermarkTracker,
)
from kstreamlet.serdes import SerdeError
from kstreamlet.state.keyed import KeyContext
from kstreamlet.topology.builder import SubTopology
from kstreamlet.topology.nodes import Node, Push, SourceNode

if TYPE_CHECKING:
    from kstreamlet.state.store import Store


class Message(Protocol):
    """The subset of ``confluent_kafka.Message`` a task reads (the test driver provides its own)."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...


class RecordCollector(Protocol):
    """Where sinks send serialized records (Kafka producer, or the test driver)."""

    def send(self, topic: str, key: bytes | None, value: bytes | None, timestamp: int, partition: int) -> None: ...


class DeserializationError(SerdeError):
    """An input record's key or value could not be deserialized."""


StoreFactory = Callable[[str, int], "Store"]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Task:
    """Runs one sub-topology for one partition."""

    def __init__(self, subtopology: SubTopology, partition: int, collector: RecordCollector,
                 partitions_of: Callable[[str], int], store_factory: StoreFactory | None = None,
                 clock: Callable[[], int] = wall_clock_ms,
                 read_all: Callable[[str], dict[int, dict[bytes, bytes]]] | None = None,
                 forwarded: dict[str, int] | None = None, event_time: bool = False,
                 partition_counts: Callable[[str], int] | None = None,
                 backlog: Callable[[str, int], bool] | None = None) -> None:
        self.subtopology = subtopology
        self.partition = partition
        self.id = f"{subtopology.id}_{partition}"
        self.collector = collector
        self.partitions_of = partitions_of
        self.clock = clock
        self._store_factory = store_factory
        self._read_all = read_all
        #: The message being processed (read by ProcessorContext).
        self.msg: Any = None
        self.keyctx = KeyContext(clock)
        self.operator_keyctx = KeyContext(clock)  # key b"" scopes operator (per-task) state
        self.stores: dict[str, Store] = {}
        self._timers: list[tuple[TimerService, Callable[[int, bytes, str], None]]] = []
        self._closers: list[Callable[[], None]] = []
        #: Checkpoint participants besides the stores (e.g. two-phase-commit sink operators).
        self.participants: list[Any] = []
        self.broadcast_handlers: dict[str, list[Callable[[bytes | None, bytes | None, int], None]]] = {}
        #: Repartition topics this task writes, which carry its watermark to downstream tasks.
        self.watermark_sinks = [(n.topic, (partition_counts or partitions_of)(n.topic)) for n in subtopology.sinks
                                if n.internal and n.key_fn is not None] if event_time else []
        # Tasks reading a forwarded input must at least recognise (and consume) watermark records.
        self.needs_watermarks = bool(self.watermark_sinks) or any(t in (forwarded or {}) for t in subtopology.sources) \
            or any(getattr(n, "uses_event_time", False) for n in subtopology.nodes)
        #: Processing-time progress needed (timers, idleness, time-based rolling of sinks).
        self.needs_ticks = self.needs_watermarks or any(
            getattr(n, "uses_processing_time", False) for n in subtopology.nodes)
        self.watermarks = WatermarkTracker(
            {t: s.watermarks or WatermarkStrategy() for t, s in subtopology.sources.items()}, clock(),
            forwarded={t: n for t, n in (forwarded or {}).items() if t in subtopology.sources},
            backlog=(lambda topic: backlog(topic, partition)) if backlog is not None else None)
        self._sent_wm = MIN_WATERMARK
        self._committed_max_ts: dict[str, Any] = {}
        self._fired_wm = MIN_WATERMARK
        self._compiled: dict[int, Push] = {}
        self.on_message: dict[str, Callable[[Message], None]] = {
            topic: self._compile_source(src) for topic, src in subtopology.sources.items()
        }
        self.multi_input = len(subtopology.sources) > 1
        self._queues: dict[str, deque[Message]] = {t: deque() for t in subtopology.sources}

    # --- building ----------------------------------------------------------------------------------

    def compiled(self, node: Node) -> Push:
        """The node's push function for this task (compiled once)."""
        fn = self._compiled.get(node.id)
        if fn is None:
            fn = node.compile(self)
            self._compiled[node.id] = fn
        return fn

    def store(self, name: str) -> "Store":
        """The task's store ``name`` (created, and registered for restoration, on first use)."""
        s = self.stores.get(name)
        if s is None:
            if self._store_factory is None:
                raise RuntimeError("this task has no state backend")
            s = self._store_factory(name, self.partition)
            self.stores[name] = s
        return s

    def read_all_partitions(self, store: "Store") -> dict[int, dict[bytes, bytes]]:
        """Committed contents of every partition of a store (union list state)."""
        if self._read_all is None or store.changelog_topic is None:
            return {store.partition: dict(store.backend.iter_from(b""))}
        return self._read_all(store.changelog_topic)

    def timer_service(self, store_name: str) -> TimerService:
        return TimerService(self.store(store_name), lambda: self.keyctx.key_bytes,
                            lambda: self.watermarks.watermark, self.clock)

    def register_timers(self, timers: TimerService, fire: Callable[[int, bytes, str], None]) -> None:
        self._timers.append((timers, fire))

    def on_close(self, fn: Callable[[], None]) -> None:
        self._closers.append(fn)

    def add_broadcast_handler(self, topic: str, handler: Callable[[bytes | None, bytes | None, int], None]) -> None:
        """Receive every element of broadcast ``topic`` (raw key, value, timestamp)."""
        self.broadcast_handlers.setdefault(topic, []).append(handler)

    def on_broadcast(self, topic: str, key: bytes | None, value: bytes | None, ts: int) -> None:
        for h in self.broadcast_handlers.get(topic, ()):
            h(key, value, ts)

    def add_participant(self, participant: Any) -> None:
        """Join the checkpoint: ``prepare_commit()`` (before the stores send their changelogs, so a
        participant may write to a store then), ``committed()``, ``aborted()``, ``recover()`` (once,
        when the task's stores are restored and before it processes) and ``close()``."""
        self.participants.append(participant)

    def _compile_source(self, src: SourceNode) -> Callable[[Message], None]:
        child = self.compiled(src)
        kde = None if src.key_serde.identity else src.key_serde.deserialize
        vde = None if src.value_serde.identity else src.value_serde.deserialize
        assign = src.watermarks.timestamp_assigner if src.watermarks else None
        task = self
        topic = src.topic

        def decode(m: Message) -> tuple[Any, Any, int]:
            k = m.key()
            v = m.value()
            try:
                if kde is not None:
                    k = kde(k)  # type: ignore[arg-type]
                if vde is not None:
                    v = vde(v)  # type: ignore[arg-type]
                if assign is not None:
                    return k, v, int(assign(v))
            except Exception as e:
                raise DeserializationError(f"{type(e).__name__}: {e}") from e
            tstype, ts = m.timestamp()
            if tstype == 0:  # TIMESTAMP_NOT_AVAILABLE: fall back to processing time
                ts = task.clock()
            return k, v, ts

        if not self.needs_watermarks:
            if kde is None and vde is None and assign is None:
                def on_message_raw(m: Message) -> None:
                    task.msg = m
                    tstype, ts = m.timestamp()
                    child(m.key(), m.value(), ts if tstype else task.clock())

                return on_message_raw

            def on_message(m: Message) -> None:
                task.msg = m
                k, v, ts = decode(m)
                child(k, v, ts)

            return on_message

        tracker = self.watermarks
        clock = self.clock
        forwarded = tracker.inputs[topic].upstream is not None

        def on_message_timed(m: Message) -> None:
            task.msg = m
            if forwarded and m.value() is None and m.key() == WATERMARK_KEY:
                headers = dict(m.headers() or ())
                if WATERMARK_HEADER in headers:
                    wm = int(headers[WATERMARK_HEADER])
                    if tracker.observe_upstream(topic, headers[WATERMARK_SOURCE_HEADER].decode(), wm,
                                                clock()) > task._fired_wm:
                        task.fire_event_timers()
                    return
            k, v, ts = decode(m)
            child(k, v, ts)
            # The watermark advances after the record (as in Flink), then due timers fire.
            if tracker.observe(topic, ts, clock()) > task._fired_wm:
                task.fire_event_timers()

        return on_message_timed

    # --- time ----------------------------------------------------------------------------------------

    def fire_event_timers(self) -> None:
        wm = self.watermarks.watermark
        self._fired_wm = wm
        for timers, fire in self._timers:
            timers.fire(EVENT, wm, lambda ts, key, f=fire: f(ts, key, "event"))

    def time_due(self, now: int) -> bool:
        """Whether :meth:`tick` would fire something (idle-advanced watermark, due processing timers)."""
        if self.watermarks.recompute(now) > self._fired_wm:
            return True
        for timers, _ in self._timers:
            due = timers.next_due(PROC)
            if due is not None and due <= now:
                return True
        return False

    def tick(self, now: int) -> None:
        """Processing-time progress: idle inputs, processing-time timers."""
        if not self.needs_ticks:
            return
        if self.watermarks.recompute(now) > self._fired_wm:
            self.fire_event_timers()
        for timers, fire in self._timers:
            timers.fire(PROC, now, lambda ts, key, f=fire: f(ts, key, "processing"))

    def stream_time_metadata(self, topic: str) -> str:
        """Committed with the offset so a new owner resumes the same stream time and watermark
        (Kafka Streams keeps stream time the same way): ``max_ts;watermark[;task=wm,...]``,
        the last part being the latest watermark of each upstream task of a forwarded input
        (upstream tasks send a watermark only when it changes, so it must survive a handover)."""
        inp = self.watermarks.inputs.get(topic)
        if inp is None or self.watermarks.watermark == MIN_WATERMARK and inp.max_ts == MIN_WATERMARK and not inp.upstream:
            return ""
        md = f"{inp.max_ts};{self.watermarks.watermark}"
        if inp.upstream:
            md += ";" + ",".join(f"{src}={wm}" for src, wm in sorted(inp.upstream.items()))
        return md

    def restore_stream_time(self, topic: str, metadata: str | None) -> None:
        inp = self.watermarks.inputs.get(topic)
        if inp is None or not metadata:
            return
        try:
            parts = metadata.split(";")
            inp.max_ts = max(inp.max_ts, int(parts[0]))
            if len(parts) > 1 and parts[1]:
                self.watermarks.watermark = max(self.watermarks.watermark, int(parts[1]))
            if len(parts) > 2 and parts[2] and inp.upstream is not None:
                for item in parts[2].split(","):
                    src, _, wm = item.partition("=")
                    inp.upstream[src] = max(inp.upstream.get(src, MIN_WATERMARK), int(wm))
        except ValueError:
            return
        self._fired_wm = self.watermarks.watermark  # timers up to here fired before the handover

    def watermark_records(self) -> list[tuple[str, int, list[tuple[str, bytes]]]]:
        """(topic, partition, headers) of the watermark records to forward, if it advanced."""
        wm = self.watermarks.watermark
        if not self.watermark_sinks or wm == self._sent_wm or wm == MIN_WATERMARK:
            return []
        self._sent_wm = wm
        headers = [(WATERMARK_HEADER, str(wm).encode()), (WATERMARK_SOURCE_HEADER, self.id.encode())]
        return [(topic, p, headers) for topic, n in self.watermark_sinks for p in range(n)]

    def snapshot_time(self) -> None:
        """At a commit: remember stream time, to roll back to on abort."""
        self._committed_max_ts = {t: (i.max_ts, dict(i.upstream) if i.upstream is not None else None)
                                  for t, i in self.watermarks.inputs.items()}
        self._committed_wm = self.watermarks.watermark
        self._committed_sent_wm = self._sent_wm

    def rollback_time(self) -> None:
        for t, (ts, up) in self._committed_max_ts.items():
            self.watermarks.inputs[t].max_ts = ts
            self.watermarks.inputs[t].upstream = up
        wm = getattr(self, "_committed_wm", MIN_WATERMARK)
        self.watermarks.watermark = wm
        self._fired_wm = wm
        self._sent_wm = getattr(self, "_committed_sent_wm", MIN_WATERMARK)

    # --- co-partitioned inputs: pick by timestamp ---------------------------------------------

    def enqueue(self, m: Message) -> None:
        self._queues[m.topic()].append(m)

    def drain(self, process: Callable[[Message], None]) -> None:
        """Process every buffered record, always the one with the smallest timestamp next."""
        queues = [q for q in self._queues.values()]
        while True:
            best: deque[Message] | None = None
            best_ts = 0
            for q in queues:
                if q:
                    ts = q[0].timestamp()[1]
                    if best is None or ts < best_ts:
                        best, best_ts = q, ts
            if best is None:
                return
            process(best.popleft())

    def clear_buffers(self) -> None:
        for q in self._queues.values():
            q.clear()

    # --- checkpoint participation (the member calls these for every task) ------------------------

    @property
    def participates(self) -> bool:
        return bool(self.stores or self.participants or self.watermark_sinks)

    def prepare_commit(self) -> None:
        send_wm = getattr(self.collector, "send_watermark", None)
        if send_wm is not None:
            for topic, partition, headers in self.watermark_records():
                send_wm(topic, partition, WATERMARK_KEY, self.clock(), headers)
        for p in self.participants:
            p.prepare_commit()
        for s in self.stores.values():
            s.prepare_commit()

    def committed(self) -> None:
        for s in self.stores.values():
            s.committed()
        for p in self.participants:
            p.committed()
        self.snapshot_time()

    def aborted(self) -> None:
        self.clear_buffers()
        for p in self.participants:
            p.aborted()
        for s in self.stores.values():
            s.aborted()
        self.rollback_time()

    def recover(self) -> None:
        """The task's state is restored: let participants finish or roll back earlier work."""
        now = self.clock()
        for inp in self.watermarks.inputs.values():
            inp.last_active = now  # restoring was not idleness
        for p in self.participants:
            p.recover()

    def close(self) -> None:
        for p in self.participants:
            try:
                p.close()
            except Exception:
                pass
        for fn in self._closers:
            try:
                fn()
            except Exception:
                pass
        for s in self.stores.values():
            s.close()
        self.stores.clear()

"""A task: one sub-topology on one partition number.

It owns compiled copies of the sub-topology's nodes (so per-task state never leaks
between partitions), its state stores and timers, and its watermark. It turns each
input message into calls down the node chain. With several input topics
(co-partitioned, ``merge``) it buffers per input and always processes the buffered
record with the smallest timestamp first.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from typing import Any, Callable

import structlog
from confluent_kafka import KafkaException

from kstreamlet import metrics
from kstreamlet.api.task import Collector, InputRecord
from kstreamlet.errors import ProcessingError
from kstreamlet.eventtime import MIN_WATERMARK, WatermarkStrategy
from kstreamlet.runtime.checkpoint import AbortCheckpoint, FatalClientError
from kstreamlet.runtime.timers import EVENT, PROC, TimerService
from kstreamlet.runtime.watermarks import (
    WATERMARK_HEADER,
    WATERMARK_IDLE_HEADER,
    WATERMARK_KEY,
    WATERMARK_SOURCE_HEADER,
    WatermarkTracker,
)
from kstreamlet.serdes import SerdeError
from kstreamlet.state.keyed import KeyContext
from kstreamlet.state.store import Store
from kstreamlet.topology.builder import SubTopology
from kstreamlet.topology.fusion import compile_chain, compile_source
from kstreamlet.topology.nodes import Node, Push, SourceNode


#: The subset of ``confluent_kafka.Message`` a task reads (the test driver provides its own).
Message = InputRecord
#: Where a task's outputs go: the member's :class:`~kstreamlet.runtime.collector.RecordCollector`
#: over the Kafka producer, or the test driver's (its ``errors`` gets failing timer calls).
RecordCollector = Collector


class DeserializationError(SerdeError):
    """An input record's key or value could not be deserialized."""


StoreFactory = Callable[[str, int], "Store"]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


_log = structlog.get_logger("kstreamlet.task")

_NOT_SENT = (MIN_WATERMARK, False)


def _append_tagged(out: list[tuple[str | None, Any, Any, int]], tag: str, k: Any, v: Any, ts: int) -> None:
    out.append((tag, k, v, ts))


def _fire_in(fire: Callable[[int, bytes, str], None], domain: str, ts: int, key: bytes) -> None:
    fire(ts, key, domain)


class _TimerGuard:
    """Runs the timer calls of one keyed operator so that a failing call leaves no trace.

    While the due timers of a batch fire, the operator's ``ctx.emit`` / ``ctx.side_output``
    append to a buffer and every store of the task records each write (old buffered value) in
    an undo log. After each ``on_timer`` call (window functions and join functions run inside
    it) that returns, its buffered outputs are forwarded; when it raises, its outputs are
    dropped and its state writes undone (the store's write buffer makes this exact: the
    checkpoint's earlier writes stay), then the error policy decides:

    - ``dlq`` / ``skip``: a dead-letter record describes the timer (``dlq``), and the timer
      counts as fired (its deletion, made before the call, stays in the checkpoint);
    - ``fail``: :class:`~kstreamlet.errors.ProcessingError` propagates; the member aborts the
      checkpoint (the timer's deletion with it) and stops, so after a restart it fires again.

    Outputs are forwarded after the call returns: an error raised *downstream* of the
    operator while they are forwarded (a later ``map``, a serializer) is handled the same way
    (state undone, policy applied), but what was already forwarded before it stays — as for
    a failing record. Kafka and checkpoint errors are never treated as the operator's.
    """

    __slots__ = ("task", "operator", "ctx", "fire", "out", "undo", "_buffer_fwd", "_buffer_sides")

    def __init__(self, task: "Task", operator: str, ctx: Any, fire: Callable[[int, bytes, str], None]) -> None:
        self.task, self.operator, self.ctx, self.fire = task, operator, ctx, fire
        self.out: list[tuple[str | None, Any, Any, int]] = []
        self.undo: list[tuple[Any, bytes, Any]] = []
        out = self.out

        def buffer_fwd(k: Any, v: Any, ts: int) -> None:
            out.append((None, k, v, ts))

        self._buffer_fwd = buffer_fwd
        self._buffer_sides: dict[str, Callable[[Any, Any, int], None]] = {}

    def run(self, timers: TimerService, kind: bytes, up_to: int, domain: str) -> None:
        """Fire the due timers of ``timers`` (one batch), each call guarded."""
        ctx = self.ctx
        fwd, sides = ctx._forward, ctx._sides
        if set(self._buffer_sides) != set(sides):
            out = self.out
            self._buffer_sides = {tag: functools.partial(_append_tagged, out, tag) for tag in sides}
        stores = list(self.task.stores.values())
        for s in stores:
            s.track_writes(self.undo)
        ctx._forward, ctx._sides = self._buffer_fwd, self._buffer_sides
        try:
            timers.fire(kind, up_to, lambda ts, key: self._call(ts, key, domain, fwd, sides))
        finally:
            ctx._forward, ctx._sides = fwd, sides
            for s in stores:
                s.untrack_writes()
            self.undo.clear()
            self.out.clear()

    def _call(self, ts: int, key: bytes, domain: str, fwd: Any, sides: dict[str, Any]) -> None:
        out, undo = self.out, self.undo
        mark = len(undo)
        del out[:]
        try:
            self.fire(ts, key, domain)
            if out:
                released = list(out)
                del out[:]
                for tag, k, v, t in released:
                    (fwd if tag is None else sides[tag])(k, v, t)
        except (KafkaException, ProcessingError, AbortCheckpoint, FatalClientError):
            raise
        except Exception as e:
            del out[:]
            Store.rollback_writes(undo[mark:])
            del undo[mark:]
            handler = self.task.collector.errors
            if handler is None:
                raise
            handler.handle_timer(self.operator, self.task.id, key, domain, ts, e, now=self.task.clock())


class Task:
    """Runs one sub-topology for one partition."""

    # Slots: the record path reads and writes a task's attributes per record (``task.msg``,
    # ``task.clock``); with more attributes than CPython's shared-key limit (30) an instance dict
    # loses its fast specialised access.
    __slots__ = (
        "subtopology", "settings", "partition", "id", "collector", "partitions_of", "clock", "_store_factory",
        "_read_all", "msg", "keyctx", "operator_keyctx", "stores", "_timers", "_closers", "participants",
        "broadcast_handlers", "watermark_sinks", "needs_watermarks", "needs_ticks", "watermarks", "_sent",
        "_wm_gauge", "_holder", "_committed_max_ts", "_fired_wm", "_compiled", "on_message", "multi_input",
        "_queues", "offsets", "first", "_committed_wm", "_committed_sent", "watermarks_in", "firing_timers", "_flushers",
        "async_runtime", "async_queues", "parked",
    )

    def __init__(self, subtopology: SubTopology, partition: int, collector: RecordCollector,
                 partitions_of: Callable[[str], int], store_factory: StoreFactory | None = None,
                 clock: Callable[[], int] = wall_clock_ms,
                 read_all: Callable[[str], dict[int, dict[bytes, bytes]]] | None = None,
                 forwarded: dict[str, int] | None = None, event_time: bool = False,
                 partition_counts: Callable[[str], int] | None = None,
                 backlog: Callable[[str, int], bool] | None = None, settings: Any = None) -> None:
        self.subtopology = subtopology
        #: The app's Settings (sinks read application id and guarantee from it).
        self.settings = settings
        self.partition = partition
        self.id = f"{subtopology.id}_{partition}"
        self.collector = collector
        self.partitions_of = partitions_of
        self.clock = clock
        self._store_factory = store_factory
        self._read_all = read_all
        #: The message being processed (read by ProcessorContext).
        self.msg: Any = None
        #: True while timers fire (their outputs carry no input headers: topology/headers.py).
        self.firing_timers = False
        self.keyctx = KeyContext(clock)
        self.operator_keyctx = KeyContext(clock)  # key b"" scopes operator (per-task) state
        self.stores: dict[str, Store] = {}
        self._timers: list[tuple[TimerService, Callable[[int, bytes, str], None], _TimerGuard | None]] = []
        self._closers: list[Callable[[], None]] = []
        #: Checkpoint participants besides the stores (e.g. two-phase-commit sink operators).
        self.participants: list[Any] = []
        #: Run first at each checkpoint (record caches): each returns whether it forwarded something.
        self._flushers: list[Callable[[], bool]] = []
        self.broadcast_handlers: dict[str, list[Callable[[bytes | None, bytes | None, int], None]]] = {}
        #: Repartition topics this task writes, which carry its watermark to downstream tasks.
        self.watermark_sinks = [(n.topic, (partition_counts or partitions_of)(n.topic)) for n in subtopology.sinks
                                if n.internal and n.key_fn is not None] if event_time else []
        # Tasks reading a forwarded input must at least recognise (and consume) watermark records.
        self.needs_watermarks = bool(self.watermark_sinks) or any(t in (forwarded or {}) for t in subtopology.sources) \
            or any(n.uses_event_time for n in subtopology.nodes)
        #: Processing-time progress needed (timers, idleness, time-based rolling of sinks).
        self.needs_ticks = self.needs_watermarks or any(
            n.uses_processing_time for n in subtopology.nodes)
        self.watermarks = WatermarkTracker(
            {t: s.watermarks or WatermarkStrategy() for t, s in subtopology.sources.items()}, clock(),
            forwarded={t: n for t, n in (forwarded or {}).items() if t in subtopology.sources},
            backlog=(lambda topic: backlog(topic, partition)) if backlog is not None else None)
        #: (watermark, idle) last forwarded to the repartition topics this task writes.
        self._sent = _NOT_SENT
        self._wm_gauge: Any = None
        self._holder: tuple[str, str | None] | None = ()  # type: ignore[assignment]  # () = not logged yet
        self._committed_max_ts: dict[str, Any] = {}
        self._fired_wm = MIN_WATERMARK
        self._compiled: dict[int, Push] = {}
        #: The event loop of this task's async operators (runtime/async_io.py), set when one compiles.
        self.async_runtime: Any = None
        #: Watermark records consumed per forwarded input since the task manager last read them
        #: (they are not records in: kstreamlet_records_in_total excludes them).
        self.watermarks_in: dict[str, int] = {}
        #: The async operators' queues of this task (operators/async_ops.py registers them).
        self.async_queues: list[Any] = []
        #: Input partition -> records consumed but not routed yet because an async operator of
        #: this task was full (the task manager parks them; bounded: runtime/async_io.py pauses the
        #: partition past a few batches).
        self.parked: dict[tuple[str, int], deque[Message]] = {}
        self.on_message: dict[str, Callable[[Message], None]] = {
            topic: self._compile_source(src) for topic, src in subtopology.sources.items()
        }
        self.multi_input = len(subtopology.sources) > 1
        self._queues: dict[str, deque[Message]] = {t: deque() for t in subtopology.sources}
        #: The checkpoint's progress on this task's inputs: next offset to commit, and the first
        #: offset processed since the last commit (where an abort rewinds). Noted by the task
        #: manager once per run of records of a partition; read by the checkpoint.
        self.offsets: dict[tuple[str, int], int] = {}
        self.first: dict[tuple[str, int], int] = {}
        self._committed_wm = MIN_WATERMARK
        self._committed_sent = _NOT_SENT

    # --- building ----------------------------------------------------------------------------------

    def compiled(self, node: Node) -> Push:
        """The node's push function for this task (compiled once)."""
        fn = self._compiled.get(node.id)
        if fn is None:
            # A linear run of stateless operators from here: one function (topology/fusion.py).
            fused = compile_chain(self, node) if getattr(self.settings, "fuse_operators", True) else None
            fn = fused if fused is not None else node.compile(self)
            self._compiled[node.id] = fn
        return fn

    @property
    def watermark(self) -> int:
        return self.watermarks.watermark

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

    def register_timers(self, timers: TimerService, fire: Callable[[int, bytes, str], None],
                        operator: str | None = None, ctx: Any = None) -> None:
        """``fire(ts, key_bytes, domain)`` runs each due timer. With ``operator`` (a user-facing
        keyed operator and its ``KeyedContext``) every call is guarded: its outputs and state
        writes take effect only if it returns, and a failure goes to the error policy (see
        :class:`_TimerGuard`). Without (e.g. a sink's own check timer) errors propagate."""
        guard = _TimerGuard(self, operator, ctx, fire) if operator is not None else None
        self._timers.append((timers, fire, guard))

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

    def add_flusher(self, flush: Callable[[], bool]) -> None:
        """Run ``flush()`` at the start of every checkpoint's ``prepare_commit``, before the watermark
        records, participants and changelogs (a record cache writes its state and forwards its
        updates then); it returns whether it forwarded anything, and the flushers run again until
        none did (a flush may fill another cache of the task downstream)."""
        self._flushers.append(flush)

    def _compile_source(self, src: SourceNode) -> Callable[[Message], None]:
        kde = None if src.key_serde.identity else src.key_serde.for_topic(src.topic, True).deserialize
        vde = None if src.value_serde.identity else src.value_serde.for_topic(src.topic, False).deserialize
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
            except AbortCheckpoint:  # e.g. a schema registry that cannot be reached: replay, not a DLQ record
                raise
            except Exception as e:
                raise DeserializationError(f"{type(e).__name__}: {e}") from e
            tstype, ts = m.timestamp()
            if tstype == 0:  # TIMESTAMP_NOT_AVAILABLE: fall back to processing time
                ts = task.clock()
            return k, v, ts

        raw = kde is None and vde is None and assign is None
        if not self.needs_watermarks and getattr(self.settings, "fuse_operators", True):
            # This prologue and the stateless chain after it as one function (topology/fusion.py).
            fused = compile_source(self, src, None if raw else decode)
            if fused is not None:
                return fused
        child = self.compiled(src)
        if not self.needs_watermarks:
            if raw:
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
        watermarks_in = self.watermarks_in
        if forwarded:
            watermarks_in[topic] = 0

        def on_message_timed(m: Message) -> None:
            task.msg = m
            if forwarded and m.value() is None and m.key() == WATERMARK_KEY:
                headers = dict(m.headers() or ())
                if WATERMARK_HEADER in headers:
                    watermarks_in[topic] += 1
                    wm = int(headers[WATERMARK_HEADER])
                    if tracker.observe_upstream(topic, headers[WATERMARK_SOURCE_HEADER].decode(), wm, clock(),
                                                WATERMARK_IDLE_HEADER in headers) > task._fired_wm:
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
        self._fire_timers(EVENT, wm, "event")

    def _fire_timers(self, kind: bytes, up_to: int, domain: str) -> None:
        self.firing_timers = True
        try:
            for timers, fire, guard in self._timers:
                if guard is not None:
                    due = timers.next_due(kind)
                    if due is not None and due <= up_to:
                        msg, self.msg = self.msg, None  # no input record while timers fire (api/task.py)
                        try:
                            guard.run(timers, kind, up_to, domain)
                        finally:
                            self.msg = msg
                else:
                    timers.fire(kind, up_to, functools.partial(_fire_in, fire, domain))
        finally:
            self.firing_timers = False

    def time_due(self, now: int) -> bool:
        """Whether :meth:`tick` would fire something (idle-advanced watermark, due processing timers),
        or the checkpoint has a watermark record to forward (the watermark or idleness changed:
        an idle upstream task must say so even if nothing else happens)."""
        if self.watermarks.recompute(now) > self._fired_wm:
            return True
        if self.watermark_sinks and self._forward_state(recompute=False) != self._sent:
            return True
        for timers, _, _ in self._timers:
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
        self._fire_timers(PROC, now, "processing")

    def stream_time_metadata(self, topic: str) -> str:
        """Committed with the offset so a new owner resumes the same stream time and watermark
        (Kafka Streams keeps stream time the same way): ``max_ts;watermark[;task=wm,...[;idle,...]]``,
        the third part being the latest watermark of each upstream task of a forwarded input and
        the fourth the upstream tasks that are idle (upstream tasks send a watermark record only when
        it changes, so both must survive a handover). Older readers ignore the fourth part."""
        inp = self.watermarks.inputs.get(topic)
        if inp is None or self.watermarks.watermark == MIN_WATERMARK and inp.max_ts == MIN_WATERMARK and not inp.upstream:
            return ""
        md = f"{inp.max_ts};{self.watermarks.watermark}"
        if inp.upstream:
            md += ";" + ",".join(f"{src}={wm}" for src, wm in sorted(inp.upstream.items()))
            if inp.idle_upstream:
                md += ";" + ",".join(sorted(inp.idle_upstream))
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
                if len(parts) > 3 and parts[3]:
                    inp.idle_upstream = {src for src in parts[3].split(",") if src in inp.upstream}
        except ValueError:
            return
        self._fired_wm = self.watermarks.watermark  # timers up to here fired before the handover

    def _forward_state(self, recompute: bool = True) -> tuple[int, bool]:
        """What downstream tasks should know of this task: (watermark, idle). Recomputed (unless
        the caller just did): a record since the last recompute makes an idle input active (the
        per-record path of a single input does not recompute)."""
        if recompute:
            self.watermarks.recompute(self.clock())
        wm, idle = self.watermarks.watermark, self.watermarks.idle
        if self.async_runtime is not None:  # records held by async operators: not passed, not idle
            held = self.async_runtime.held_min_ts(self)
            if held is not None:
                return min(wm, max(held - 1, self._sent[0])), False
        return wm, idle

    def watermark_records(self) -> list[tuple[str, int, list[tuple[str, bytes]]]]:
        """(topic, partition, headers) of the watermark records to forward: when the watermark
        advanced or the task became idle or active again. An idle task sends one even when it never
        had a record (minimum watermark), so downstream stops waiting for it."""
        if not self.watermark_sinks:
            return []
        state = self._forward_state()
        wm, idle = state
        if state == self._sent or (wm == MIN_WATERMARK and not idle and not self._sent[1]):
            return []
        self._sent = state
        headers = [(WATERMARK_HEADER, str(wm).encode()), (WATERMARK_SOURCE_HEADER, self.id.encode())]
        if idle:
            headers.append((WATERMARK_IDLE_HEADER, b"1"))
        return [(topic, p, headers) for topic, n in self.watermark_sinks for p in range(n)]

    def snapshot_time(self) -> None:
        """At a commit: remember stream time, to roll back to on abort."""
        self._committed_max_ts = {t: (i.max_ts, dict(i.upstream) if i.upstream is not None else None,
                                      set(i.idle_upstream))
                                  for t, i in self.watermarks.inputs.items()}
        self._committed_wm = self.watermarks.watermark
        self._committed_sent = self._sent

    def rollback_time(self) -> None:
        for t, (ts, up, idle) in self._committed_max_ts.items():
            self.watermarks.inputs[t].max_ts = ts
            self.watermarks.inputs[t].upstream = up
            self.watermarks.inputs[t].idle_upstream = idle
        wm = self._committed_wm
        self.watermarks.watermark = wm
        self._fired_wm = wm
        self._sent = self._committed_sent

    def _observe_watermark(self) -> None:
        """Per checkpoint (not per record): the watermark gauge, and a debug line naming the input
        (and upstream task) that holds the watermark back, whenever that changes."""
        wm = self.watermarks.watermark
        if wm != MIN_WATERMARK:
            if self._wm_gauge is None:
                self._wm_gauge = metrics.TASK_WATERMARK.labels(self.id)
            self._wm_gauge.set(wm)
        holder = self.watermarks.holder(self.clock())
        key = None if holder is None else holder[:2]
        if key != self._holder:
            self._holder = key
            if holder is None:
                _log.debug("watermark not held back: every input idle", task=self.id, watermark=wm)
            else:
                _log.debug("watermark held back", task=self.id, watermark=wm, input=holder[0],
                           upstream=holder[1], input_watermark=holder[2])

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

    def async_full(self) -> bool:
        """An async operator of this task has no free slot: a record routed now would wait."""
        for q in self.async_queues:
            if q.full():
                return True
        return False

    def async_room(self) -> int:
        """Free slots of this task's fullest async operator."""
        return min((q.capacity - q.in_flight() for q in self.async_queues), default=0)

    # --- checkpoint participation (runtime/checkpoint.py calls these for every task) ------------

    @property
    def participates(self) -> bool:
        """Has stores, participants or watermark sinks: work to do at every commit."""
        return bool(self.stores or self.participants or self.watermark_sinks)

    def prepare_commit(self) -> dict[tuple[str, int], tuple[int, str | None]]:
        """Step 1 of a checkpoint: this task's offsets to commit, ``{(topic, partition): (next
        offset, metadata)}`` (the metadata carries stream time, see :meth:`stream_time_metadata`),
        after producing into the checkpoint what must commit with them: watermark records for
        downstream tasks, participants' records (sink committables), then the stores' changelogs.
        Async operators first release what is complete (and drain those that cannot hold their
        records across a checkpoint), then freeze: they write what they hold as participants below,
        and the watermark forwarded does not pass it; then the record caches flush (what the
        released results updated included)."""
        aio = self.async_runtime
        if aio is not None:
            aio.checkpoint()
        flushers = self._flushers
        while True:  # a cache flush may push into an async operator; its results may update a cache
            flushed = any([f() for f in flushers]) if flushers else False
            drained = aio.drain_unheld() if aio is not None else False
            if not (flushed or drained):
                break
        wm = self.needs_watermarks
        offsets = {tp: (off, (self.stream_time_metadata(tp[0]) or None) if wm else None)
                   for tp, off in self.offsets.items()}
        if self.participates:
            send_wm = self.collector.send_watermark
            for topic, partition, headers in self.watermark_records():
                send_wm(topic, partition, WATERMARK_KEY, self.clock(), headers)
            for p in self.participants:
                p.prepare_commit()
            for s in self.stores.values():
                s.prepare_commit()
        return offsets

    def committed(self) -> None:
        """The checkpoint committed: apply the stores' buffers, tell participants, keep stream time."""
        self.offsets.clear()
        self.first.clear()
        if not (self.participates or self.needs_watermarks):
            return
        for s in self.stores.values():
            s.committed()
        for p in self.participants:
            p.committed()
        self.snapshot_time()
        if self.needs_watermarks:
            self._observe_watermark()

    def aborted(self) -> dict[tuple[str, int], int]:
        """The checkpoint aborted: drop everything since the last commit; returns where each input
        rewinds (the first offset processed since)."""
        rewind = dict(self.first)
        for tp, q in self.parked.items():  # consumed, never processed: replayed too
            if q:
                off = q[0].offset()
                rewind[tp] = min(rewind.get(tp, off), off)
        self.parked.clear()
        self.offsets.clear()
        self.first.clear()
        self.clear_buffers()
        for p in self.participants:
            p.aborted()
        for s in self.stores.values():
            s.aborted()
        self.rollback_time()
        return rewind

    def recover(self) -> None:
        """The task's state is restored: let participants finish or roll back earlier work."""
        now = self.clock()
        for inp in self.watermarks.inputs.values():
            inp.last_active = now  # restoring was not idleness
        for p in self.participants:
            p.recover()

    def close(self) -> None:
        self.parked.clear()
        metrics.forget_task(self.id)  # its watermark and stream-time series
        self._wm_gauge = None
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

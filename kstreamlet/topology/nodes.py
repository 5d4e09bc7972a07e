"""Processor nodes: the graph the DSL builds and each task compiles into closures.

A node's :meth:`Node.compile` returns ``push(key, value, timestamp)``, a plain function
that does the node's work and calls its children's ``push``. Compiling once per task
keeps the per-record path free of attribute lookups and dispatch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple

from kstreamlet.serdes import Serde

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices as Task

Push = Callable[[Any, Any, int], None]

_ids = itertools.count()


def _noop(k: Any, v: Any, ts: int) -> None:
    return None


def fan_out(pushes: list[Push]) -> Push:
    """One push that forwards to every child, specialised for the common 0/1/2 cases."""
    if not pushes:
        return _noop
    if len(pushes) == 1:
        return pushes[0]
    if len(pushes) == 2:
        a, b = pushes

        def both(k: Any, v: Any, ts: int) -> None:
            a(k, v, ts)
            b(k, v, ts)

        return both
    ps = tuple(pushes)

    def every(k: Any, v: Any, ts: int) -> None:
        for p in ps:
            p(k, v, ts)

    return every


class Node:
    """A processor in the topology graph."""

    kind = "node"
    #: Needs watermarks (event-time timers, lateness): tasks running it track and forward them.
    uses_event_time = False
    #: Needs processing-time ticks (processing-time timers, time-based rolling of a sink).
    uses_processing_time = False

    def __init__(self, name: str | None = None) -> None:
        self.id = next(_ids)
        self.name = name or f"{self.kind}-{self.id}"
        self.children: list[Node] = []
        self.parents: list[Node] = []

    def add_child(self, child: "Node") -> "Node":
        self.children.append(child)
        child.parents.append(self)
        return child

    def compile_children(self, task: "Task") -> Push:
        return fan_out([task.compiled(c) for c in self.children])

    def compile(self, task: "Task") -> Push:  # pragma: no cover - every subclass overrides
        raise TypeError(f"{type(self).__name__} cannot be compiled")

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclass
class StartPosition:
    """Where a source starts when the group has no committed offset (or when overriding it).

    ``kind`` is one of ``group`` (committed offset, else ``auto_offset_reset``), ``earliest``,
    ``latest``, ``offsets`` (``{partition: offset}``) or ``timestamp`` (epoch ms).
    """

    kind: str = "group"
    offsets: Mapping[int, int] = field(default_factory=dict)
    timestamp_ms: int | None = None
    override_committed: bool = False

    @classmethod
    def parse(cls, start: "StartPosition | str | Mapping[int, int] | None", override_committed: bool = False) -> "StartPosition":
        if isinstance(start, StartPosition):
            return start
        if start is None or start in ("group", "committed"):
            return cls("group", override_committed=False)
        if start in ("earliest", "latest"):
            return cls(str(start), override_committed=override_committed)
        if isinstance(start, Mapping):
            return cls("offsets", offsets=dict(start), override_committed=override_committed)
        raise ValueError(
            f"unknown start position {start!r}: use 'group', 'earliest', 'latest', a {{partition: offset}} dict "
            "or StartPosition.from_timestamp(ms)"
        )

    @classmethod
    def from_timestamp(cls, timestamp_ms: int, override_committed: bool = False) -> "StartPosition":
        return cls("timestamp", timestamp_ms=timestamp_ms, override_committed=override_committed)


class SourceNode(Node):
    """Reads one topic; deserializes key and value. Compiled by the task into ``on_message``."""

    kind = "source"

    def __init__(self, topic: str, key_serde: Serde[Any], value_serde: Serde[Any], start: StartPosition,
                 internal: bool = False, partitions: int | None = None, name: str | None = None,
                 watermarks: Any = None) -> None:
        super().__init__(name)
        self.topic = topic
        #: WatermarkStrategy (timestamp assigner, out-of-orderness, idleness) or None.
        self.watermarks = watermarks
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.start = start
        #: True for repartition and source-buffer topics the app creates itself.
        self.internal = internal
        #: Partition count for internal topics (None: derive from upstream sources).
        self.partitions = partitions

    def compile(self, task: "Task") -> Push:
        return self.compile_children(task)


class MapNode(Node):
    kind = "map"

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None) -> None:
        super().__init__(name)
        self.fn = fn

    def compile(self, task: "Task") -> Push:
        fn, child = self.fn, self.compile_children(task)

        def push(k: Any, v: Any, ts: int) -> None:
            child(k, fn(v), ts)

        return push


class FilterNode(Node):
    kind = "filter"

    def __init__(self, pred: Callable[[Any], bool], name: str | None = None) -> None:
        super().__init__(name)
        self.pred = pred

    def compile(self, task: "Task") -> Push:
        pred, child = self.pred, self.compile_children(task)

        def push(k: Any, v: Any, ts: int) -> None:
            if pred(v):
                child(k, v, ts)

        return push


class FlatMapNode(Node):
    kind = "flat_map"

    def __init__(self, fn: Callable[[Any], Iterable[Any]], name: str | None = None) -> None:
        super().__init__(name)
        self.fn = fn

    def compile(self, task: "Task") -> Push:
        fn, child = self.fn, self.compile_children(task)

        def push(k: Any, v: Any, ts: int) -> None:
            for out in fn(v):
                child(k, out, ts)

        return push


class PeekNode(Node):
    kind = "peek"

    def __init__(self, fn: Callable[[Any, Any], None], name: str | None = None) -> None:
        super().__init__(name)
        self.fn = fn

    def compile(self, task: "Task") -> Push:
        fn, child = self.fn, self.compile_children(task)

        def push(k: Any, v: Any, ts: int) -> None:
            fn(k, v)
            child(k, v, ts)

        return push


class MergeNode(Node):
    """Joins several streams into one (same sub-topology, so co-partitioned inputs share a task)."""

    kind = "merge"

    def compile(self, task: "Task") -> Push:
        return self.compile_children(task)


class SideOutputNode(Node):
    """A node whose ``ctx.side_output(tag, ...)`` feeds streams attached by tag (not ``children``)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.side_children: dict[str, list[Node]] = {}

    def add_side_child(self, tag: str, child: Node) -> Node:
        self.side_children.setdefault(tag, []).append(child)
        child.parents.append(self)
        return child


class ProcessNode(SideOutputNode):
    """``fn(value, ctx)``: the low-level operator. ``ctx.emit`` forwards, ``ctx.side_output`` diverts."""

    kind = "process"

    def __init__(self, fn: Callable[[Any, Any], Any], name: str | None = None) -> None:
        super().__init__(name)
        self.fn = fn

    def compile(self, task: "Task") -> Push:
        from kstreamlet.api.context import ProcessorContext

        fn = self.fn
        child = self.compile_children(task)
        sides = {tag: fan_out([task.compiled(c) for c in cs]) for tag, cs in self.side_children.items()}
        ctx = ProcessorContext(task, child, sides)

        def push(k: Any, v: Any, ts: int) -> None:
            ctx.key = k
            ctx.timestamp = ts
            fn(v, ctx)

        return push


class BranchNode(Node):
    """Routes each record to the first branch whose predicate holds (Kafka Streams ``split``)."""

    kind = "branch"

    def __init__(self, predicates: list[Callable[[Any], bool] | None], name: str | None = None) -> None:
        super().__init__(name)
        self.predicates = predicates  # None = default branch (everything no other branch took)
        self.branch_children: list[list[Node]] = [[] for _ in predicates]

    def add_branch_child(self, index: int, child: Node) -> Node:
        self.branch_children[index].append(child)
        child.parents.append(self)
        return child

    def compile(self, task: "Task") -> Push:
        routes = [
            (pred, fan_out([task.compiled(c) for c in cs])) for pred, cs in zip(self.predicates, self.branch_children)
        ]

        def push(k: Any, v: Any, ts: int) -> None:
            for pred, out in routes:
                if pred is None or pred(v):
                    out(k, v, ts)
                    return

        return push


class SinkParts(NamedTuple):
    """A compiled sink's pieces (:meth:`SinkNode.parts`)."""

    send: Callable[..., None]
    topic: str
    kser: Callable[[Any], Any] | None
    vser: Callable[[Any], Any] | None
    key_fn: Callable[[Any], Any] | None
    partitioner: Callable[[Any, Any, int], int] | None
    n_partitions: int
    #: Output headers of (key, value), or None for the default (propagate, no new traces): ``carry``.
    hdrs: Callable[[Any, Any], Any] | None
    carry: Callable[[Any, Any], Any]


class SinkNode(Node):
    """Serializes and sends to a topic (through the task's record collector)."""

    kind = "sink"

    def __init__(self, topic: str, key_serde: Serde[Any], value_serde: Serde[Any],
                 partitioner: Callable[[Any, Any, int], int] | None = None,
                 key_fn: Callable[[Any], Any] | None = None, internal: bool = False, name: str | None = None,
                 headers: Any = "propagate") -> None:
        super().__init__(name)
        self.topic = topic
        #: Output headers: "propagate" | "drop" | fn(key, value, headers) (topology/headers.py).
        self.headers = headers
        self.key_serde = key_serde
        self.value_serde = value_serde
        self.partitioner = partitioner
        #: For repartitioning (``key_by``): the new key is computed from the value here.
        self.key_fn = key_fn
        self.internal = internal

    def parts(self, task: "Task") -> "SinkParts":
        """What :meth:`compile` sends with for ``task``; a fused chain (topology/fusion.py) writes
        the same statements inline with them."""
        topic = self.topic
        kser = None if self.key_serde.identity else self.key_serde.for_topic(topic, True).serialize
        vser = None if self.value_serde.identity else self.value_serde.for_topic(topic, False).serialize
        from kstreamlet.topology.headers import carried, output_headers

        start_traces = getattr(task.settings, "tracing", "off") in ("w3c", "otel")
        # Output headers (topology/headers.py). The default (propagate, no new traces) is inlined:
        # a record without headers costs one m.headers() call.
        hdrs = None if self.headers == "propagate" and not start_traces else \
            output_headers(task, self.headers, start_traces)
        return SinkParts(task.collector.send, topic, kser, vser, self.key_fn, self.partitioner,
                         task.partitions_of(topic) if self.partitioner else 0, hdrs, carried(task))

    def compile(self, task: "Task") -> Push:
        send, topic, kser, vser, key_fn, partitioner, n_partitions, hdrs, carry = self.parts(task)

        if hdrs is None:
            if partitioner is None and key_fn is None and kser is None:
                if vser is None:
                    # Bytes in, bytes out: nothing to do but send.
                    def push_raw(k: Any, v: Any, ts: int) -> None:
                        m = task.msg
                        h = m.headers() if m is not None else None
                        send(topic, k, v, ts, -1, carry(m, h) if h else None)

                    return push_raw

                # The common case (bytes keys, typed values), without branches.
                def push_fast(k: Any, v: Any, ts: int) -> None:
                    m = task.msg
                    h = m.headers() if m is not None else None
                    send(topic, k, vser(v), ts, -1, carry(m, h) if h else None)

                return push_fast

            def push_carry(k: Any, v: Any, ts: int) -> None:
                if key_fn is not None:
                    k = key_fn(v)
                part = partitioner(k, v, n_partitions) if partitioner is not None else -1
                m = task.msg
                h = m.headers() if m is not None else None
                send(topic, kser(k) if kser else k, vser(v) if vser else v, ts, part, carry(m, h) if h else None)

            return push_carry

        def push(k: Any, v: Any, ts: int) -> None:
            if key_fn is not None:
                k = key_fn(v)
            part = partitioner(k, v, n_partitions) if partitioner is not None else -1
            send(topic, kser(k) if kser else k, vser(v) if vser else v, ts, part, hdrs(k, v))

        return push


class KeyedProcessNode(SideOutputNode):
    """Runs a :class:`~kstreamlet.api.functions.KeyedProcessFunction` with keyed state and timers.

    Each task gets a shallow copy of the function, opened with the task's runtime context.
    Store names are ``<node name>-<descriptor name>`` (name the node for stable names).
    """

    kind = "keyed_process"

    def __init__(self, fn: Any, key_serde: Serde[Any], name: str | None = None) -> None:
        super().__init__(name)
        self.fn = fn
        self.key_serde = key_serde
        # Watermarks are tracked (and forwarded through repartition topics) only for operators that
        # can use them: those with timers, or functions declaring ``uses_event_time = True`` (e.g. to
        # read ``ctx.is_late``). A plain running count does not pay for event time.
        declared = getattr(fn, "uses_event_time", None)
        self.uses_event_time = bool(declared) if declared is not None else self._has_timers()

    def store_name(self, state_name: str) -> str:
        return f"{self.name}-{state_name}"

    def _has_timers(self) -> bool:
        from kstreamlet.api.functions import KeyedProcessFunction

        return type(self.fn).on_timer is not KeyedProcessFunction.on_timer

    def compile(self, task: "Task") -> Push:
        import copy

        return self.compile_fn(task, copy.copy(self.fn))[0]

    def compile_fn(self, task: "Task", fn: Any) -> tuple[Push, Any]:
        """Compile around an already copied function; returns (push, its KeyedContext)."""
        from kstreamlet.api.context import KeyedContext, RuntimeContext

        child = self.compile_children(task)
        sides = {tag: fan_out([task.compiled(c) for c in cs]) for tag, cs in self.side_children.items()}
        timers = task.timer_service(self.store_name("timers")) if self._has_timers() else None
        ctx = KeyedContext(task, child, sides, timers)  # type: ignore[arg-type]
        fn.open(RuntimeContext(task, self))
        keyctx = task.keyctx
        kser = None if self.key_serde.identity else self.key_serde.serialize
        kde = None if self.key_serde.identity else self.key_serde.deserialize
        process_element = fn.process_element

        def push(k: Any, v: Any, ts: int) -> None:
            # Records without a key share one (empty) key scope.
            keyctx.key_bytes = (kser(k) if kser is not None else k) or b""
            ctx.key = k
            ctx.timestamp = ts
            ctx.time_domain = None
            process_element(v, ctx)

        if timers is not None:
            on_timer = fn.on_timer

            def fire(ts: int, key_bytes: bytes, domain: str) -> None:
                keyctx.key_bytes = key_bytes
                ctx.key = kde(key_bytes) if kde is not None else key_bytes
                ctx.timestamp = ts
                ctx.time_domain = domain
                on_timer(ts, ctx)

            # Guarded by name: a failing on_timer (window and join functions run in it) follows the
            # error policy, and nothing it emitted or wrote survives it.
            task.register_timers(timers, fire, operator=self.name, ctx=ctx)
        task.on_close(fn.close)
        return push, ctx

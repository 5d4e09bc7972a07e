"""The stream DSL: what users chain to describe their processing.

A :class:`Stream` is an immutable handle on a node of the topology graph; every method
adds a node and returns a new handle. Elements are *values*; every record also carries
a key and a timestamp (ms) that flow along unchanged unless an operator sets them.

Example::

    app = App(application_id="wordcount")
    lines = app.stream("lines", value_serde=serdes.STR)
    (lines.flat_map(str.split)
          .filter(lambda w: len(w) > 2)
          .key_by(lambda w: w, key_serde=serdes.STR, value_serde=serdes.STR)
          .to("words"))
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, overload

from kstreamlet import serdes as _serdes
from kstreamlet.dsl.broadcast import BroadcastConnectedStream
from kstreamlet.dsl.connected import ConnectedStreams
from kstreamlet.dsl.joins import CoGroupBuilder, IntervalJoinBuilder, JoinBuilder, Table, join_table
from kstreamlet.dsl.windowed import WindowedStream
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.api.context import ProcessorContext
from kstreamlet.api.functions import KeyedProcessFunction
from kstreamlet.operators.async_ops import AsyncKeyedProcessNode, AsyncMapNode
from kstreamlet.operators.aggregate import (
    Aggregate,
    Count,
    Max,
    Min,
    RunningAggregate,
    RunningReduce,
    Sum,
    cache_limit,
    extractor,
)
from kstreamlet.operators.window import CountWindowOperator
from kstreamlet.serdes import Serde
from kstreamlet.topology.builder import BroadcastSpec, TopologyBuilder
from kstreamlet.topology.nodes import (
    BranchNode,
    FilterNode,
    FlatMapNode,
    KeyedProcessNode,
    MapNode,
    MergeNode,
    Node,
    PeekNode,
    ProcessNode,
    SideOutputNode,
    SinkNode,
    SourceNode,
    StartPosition,
)
from kstreamlet.windowing.assigners import WindowAssigner


#: KeyedStream methods, and what to write instead when they are called on an unkeyed stream.
_KEYED_ONLY = {
    "window": "windows", "count_window": "count windows", "reduce": "reductions", "aggregate": "aggregations",
    "count": "counts", "sum": "sums", "min": "minimums", "max": "maximums", "interval_join": "interval joins",
    "join_table": "table joins",
}


class Stream:
    """A stream of records (key, value, timestamp)."""

    #: False here; True on :class:`KeyedStream`.
    is_keyed = False

    if not TYPE_CHECKING:  # at run time only: the type checker still flags a typo on a Stream
        def __getattr__(self, name: str) -> Any:
            what = _KEYED_ONLY.get(name)
            if what is not None:
                raise TypeError(
                    f".{name}() needs a keyed stream ({what} are per key): key the stream first, e.g. "
                    f".key_by(lambda v: v['id']).{name}(...), or .keyed().{name}(...) to use the record key as is")
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __init__(self, builder: TopologyBuilder, node: Node, key_serde: Serde[Any], value_serde: Serde[Any],
                 attach: Callable[[Node], Node] | None = None, watermarks: WatermarkStrategy | None = None) -> None:
        self._builder = builder
        self._node = node
        #: The source's watermark strategy, carried through repartitioning.
        self.watermarks = watermarks
        #: Serdes used by ``to`` / ``key_by`` when none are given (inherited from the source).
        self.key_serde = key_serde
        self.value_serde = value_serde
        # How a new child hangs off this stream (side outputs and branches attach differently).
        self._attach: Callable[[Node], Node] = attach or node.add_child

    def _then(self, node: Node, key_serde: Serde[Any] | None = None, value_serde: Serde[Any] | None = None) -> "Stream":
        self._attach(node)
        return Stream(self._builder, node, key_serde or self.key_serde, value_serde or self.value_serde,
                      watermarks=self.watermarks)

    def _derive_keyed(self, node: Node) -> "KeyedStream":
        """A keyed sibling handle on ``node`` (already attached), with this stream's serdes."""
        return KeyedStream(self._builder, node, self.key_serde, self.value_serde, watermarks=self.watermarks)

    def map(self, fn: Callable[[Any], Any], name: str | None = None) -> "Stream":
        """``value -> new value``; key and timestamp are kept."""
        return self._then(MapNode(fn, name))

    def map_async(self, fn: Callable[[Any], Awaitable[Any]], concurrency: int = 64, timeout: float | None = None,
                  ordered: bool = True, key_ordered: bool = False, retries: int = 0, retry_backoff: float = 0.1,
                  name: str | None = None, checkpoint_key_serde: Serde[Any] | str | None = None,
                  checkpoint_value_serde: Serde[Any] | str | None = None) -> "Stream":
        """``await fn(value) -> new value`` on the member's event loop, up to ``concurrency`` records
        held per task (a full task's partitions are paused). ``ordered``: results in input
        order per partition; otherwise as they complete (``key_ordered``: still in input order per
        key). A call that raises or runs past ``timeout`` s is retried ``retries`` times, waiting
        ``retry_backoff`` s (doubling) between attempts, then follows ``error_policy``. A checkpoint
        does not wait for the calls in flight: their input records are written to the operator's
        store ``<name>-async`` (encoded with the stream's serdes, or ``checkpoint_key_serde`` /
        ``checkpoint_value_serde``) and issued again after a failure (docs/async.md)."""
        ks = _serdes.resolve(checkpoint_key_serde, self.key_serde)
        vs = _serdes.resolve(checkpoint_value_serde, self.value_serde)
        return self._then(AsyncMapNode(fn, concurrency, timeout, ordered, key_ordered, retries, retry_backoff,
                                       name or self._builder.generated_name("map_async"), ks, vs))

    def filter(self, predicate: Callable[[Any], bool], name: str | None = None) -> "Stream":
        """Keep the records whose value satisfies ``predicate``."""
        return self._then(FilterNode(predicate, name))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], name: str | None = None) -> "Stream":
        """``value -> iterable of values``; each keeps the input's key and timestamp."""
        return self._then(FlatMapNode(fn, name))

    def peek(self, fn: Callable[[Any, Any], None], name: str | None = None) -> "Stream":
        """Call ``fn(key, value)`` for its side effect; the record passes unchanged."""
        return self._then(PeekNode(fn, name))

    def process(self, fn: Callable[[Any, ProcessorContext], None], name: str | None = None) -> "Stream":
        """The low-level operator: ``fn(value, ctx)`` may emit any number of records with
        ``ctx.emit(value, key=..., timestamp=...)`` and divert with ``ctx.side_output(tag, value)``.
        ``ctx`` also gives ``key``, ``timestamp``, ``topic``, ``partition``, ``offset``, ``headers``.
        """
        return self._then(ProcessNode(fn, name))

    def side_output(self, tag: str) -> "Stream":
        """The records a preceding ``process`` sent with ``ctx.side_output(tag, ...)``."""
        node = self._node
        if not isinstance(node, SideOutputNode):
            raise TypeError("side_output() is only available on the stream returned by process()")
        placeholder = MergeNode(name=f"side-{tag}-{node.id}")
        node.add_side_child(tag, placeholder)
        return Stream(self._builder, placeholder, self.key_serde, self.value_serde, watermarks=self.watermarks)

    def branch(self, *predicates: Callable[[Any], bool], default: bool = True) -> list["Stream"]:
        """Split by predicates; a record goes to the first branch it matches. With ``default``
        a last stream receives what no predicate took.

        >>> # evens, odds = numbers.branch(lambda n: n % 2 == 0)
        """
        preds: list[Callable[[Any], bool] | None] = list(predicates) + ([None] if default else [])
        node = BranchNode(preds)
        self._attach(node)
        out = []
        for i in range(len(preds)):
            head = MergeNode(name=f"branch-{node.id}-{i}")
            node.add_branch_child(i, head)
            out.append(Stream(self._builder, head, self.key_serde, self.value_serde, watermarks=self.watermarks))
        return out

    def merge(self, *others: "Stream", name: str | None = None) -> "Stream":
        """One stream with the records of all; inputs from different topics must be
        co-partitioned (same partition count), and a task processes them by timestamp."""
        node = MergeNode(name)
        self._attach(node)
        for o in others:
            o._attach(node)
        return Stream(self._builder, node, self.key_serde, self.value_serde, watermarks=self.watermarks)

    def key_by(self, fn: Callable[[Any], Any], key_serde: Serde[Any] | str | None = None,
               value_serde: Serde[Any] | str | None = None, partitions: int | None = None,
               name: str | None = None) -> "KeyedStream":
        """Re-key by ``fn(value)`` and repartition through an internal topic
        ``<application_id>-<name>-repartition``, so all records of a key meet in one task.
        The key serde defaults to JSON (str, int, lists), the value serde to the stream's.
        Returns a :class:`KeyedStream` (keyed state, timers, aggregations).
        """
        ks = _serdes.resolve(key_serde, _serdes.JSON)
        vs = _serdes.resolve(value_serde, self.value_serde)
        topic = self._builder.repartition_topic(name, partitions)
        self._attach(SinkNode(topic, ks, vs, key_fn=fn, internal=True, name=f"key_by-{topic}"))
        # Event time was assigned upstream (it travels as the record timestamp); records from
        # several upstream tasks interleave, so the same out-of-orderness bound applies.
        wm = replace(self.watermarks, timestamp_assigner=None) if self.watermarks else None
        source = SourceNode(topic, ks, vs, StartPosition("earliest"), internal=True, partitions=partitions,
                            watermarks=wm)
        self._builder.add_source(source)
        return KeyedStream(self._builder, source, ks, vs, watermarks=wm)

    def keyed(self) -> "KeyedStream":
        """Use the record key as is, without repartitioning (Kafka Streams' ``groupByKey``).
        Only correct when the input topic is already partitioned by this key; keyed state is
        scoped by the key serialized with the stream's key serde (set it on ``app.stream``)."""
        head = MergeNode(name=f"keyed-{self._node.id}")
        self._attach(head)
        return KeyedStream(self._builder, head, self.key_serde, self.value_serde, watermarks=self.watermarks)

    def join(self, other: "Stream", how: str = "inner") -> JoinBuilder["Stream"]:
        """Window join with ``other`` (see :mod:`kstreamlet.dsl.joins`): ``.where(k).equal_to(k2).window(w).apply(fn)``."""
        return JoinBuilder(self, other, how)

    def co_group(self, other: "Stream") -> CoGroupBuilder["Stream"]:
        """Windowed co-group with ``other`` (see :mod:`kstreamlet.dsl.joins`): ``.where(k).equal_to(k2)
        .window(w).apply(fn(lefts, rights))``, once per key and window, also for keys on one side only."""
        return CoGroupBuilder(self, other)

    def left_join(self, other: "Stream") -> JoinBuilder["Stream"]:
        """Window left join: unmatched left elements are emitted with ``None`` when the window fires."""
        return self.join(other, how="left")

    def outer_join(self, other: "Stream") -> JoinBuilder["Stream"]:
        """Window full outer join."""
        return self.join(other, how="outer")

    @overload
    def connect(self, other: BroadcastSpec) -> BroadcastConnectedStream["Stream"]: ...

    @overload
    def connect(self, other: "Stream") -> ConnectedStreams["Stream"]: ...

    def connect(self, other: "BroadcastSpec | Stream") -> "BroadcastConnectedStream[Stream] | ConnectedStreams[Stream]":
        """Connect a broadcast stream (``app.broadcast(...)``), or another stream (Flink's
        ``connect``); finish with ``.process(fn)``: a (Keyed)BroadcastProcessFunction for a
        broadcast, a :class:`~kstreamlet.api.functions.KeyedCoProcessFunction` for two keyed
        streams (state and timers shared by both), a
        :class:`~kstreamlet.api.functions.CoProcessFunction` for two unkeyed ones."""
        if isinstance(other, Stream):
            return ConnectedStreams(self, other)
        return BroadcastConnectedStream(self, other)

    def sink(self, sink: Any, name: str | None = None) -> None:
        """Write to a side sink with the app's guarantee; under exactly-once the sink joins each
        checkpoint with two-phase commit (see :mod:`kstreamlet.sinks`)."""
        from kstreamlet.sinks.twophase.operator import TwoPhaseCommitSinkNode

        self._attach(TwoPhaseCommitSinkNode(sink, name or self._builder.generated_name("sink")))

    def to(self, topic: str, key_serde: Serde[Any] | str | None = None, value_serde: Serde[Any] | str | None = None,
           partitioner: Callable[[Any, Any, int], int] | None = None, name: str | None = None,
           headers: Any = "propagate") -> None:
        """Write to ``topic`` (which must exist). Without a ``partitioner(key, value, n)`` the
        partition is murmur2 of the serialized key, as in Kafka's Java clients.

        ``headers``: ``"propagate"`` (default: the input record's headers, ``kstreamlet.*`` ones
        stripped, a W3C ``traceparent`` continued with a new span id), ``"drop"``, or
        ``fn(key, value, headers) -> headers`` (kstreamlet/topology/headers.py)."""
        from kstreamlet.topology.headers import check_mode

        ks = _serdes.resolve(key_serde, self.key_serde)
        vs = _serdes.resolve(value_serde, self.value_serde)
        self._attach(SinkNode(topic, ks, vs, partitioner=partitioner, name=name, headers=check_mode(headers)))


class KeyedStream(Stream):
    """A stream partitioned by key: keyed state, timers and running aggregations.

    ``process`` accepts a :class:`~kstreamlet.api.functions.KeyedProcessFunction` (state via
    descriptors in ``open``, timers via ``ctx.timers``) or a plain ``fn(value, ctx)``.
    The aggregations emit the updated result for the record's key on every record (a
    changelog stream, like a Kafka Streams KTable's ``toStream()``)::

        counts = words.key_by(lambda w: w, key_serde=serdes.STR).count()
        counts.to("word-counts", value_serde=serdes.INT64)
    """

    is_keyed = True

    def process(self, fn: KeyedProcessFunction | Callable[[Any, ProcessorContext], None],
                name: str | None = None, *, concurrency: int = 64, timeout: float | None = None,
                ordered: bool = True, retries: int = 0, retry_backoff: float = 0.1) -> Stream:
        """A :class:`KeyedProcessFunction` (keyed state, timers) or a plain ``fn(value, ctx)``. With
        an ``async def process_element`` the function runs on the member's event loop: one call per
        key at a time (consistent state), up to ``concurrency`` records per task, outputs released in
        input order (``ordered``) or as they complete (per key in order); ``timeout``, ``retries``
        and ``retry_backoff`` as for :meth:`Stream.map_async` (docs/async.md)."""
        if isinstance(fn, KeyedProcessFunction):
            if inspect.iscoroutinefunction(type(fn).process_element):
                return self._then(AsyncKeyedProcessNode(fn, self.key_serde, name or self._builder.generated_name("process"),
                                                        concurrency, timeout, ordered, retries, retry_backoff))
            return self._then(KeyedProcessNode(fn, self.key_serde, name or self._builder.generated_name("process")))
        return super().process(fn, name)

    def _aggregate_fn(self, fn: KeyedProcessFunction, serde: Serde[Any], name: str | None, op: str) -> Stream:
        node = KeyedProcessNode(fn, self.key_serde, name or self._builder.generated_name(op))
        return self._then(node, value_serde=serde)

    def reduce(self, fn: Callable[[Any, Any], Any], serde: Serde[Any] | str | None = None,
               name: str | None = None, cache: bool | None = None, cache_max_bytes: int | None = None) -> Stream:
        """Running ``fn(accumulated, value)`` per key; emits the new value per record. A reduce
        returns the input's type, so state and output use the input's value serde unless ``serde``
        says otherwise (as ``window(w).reduce`` and Kafka Streams' ``reduce`` do). ``cache`` /
        ``cache_max_bytes``: this operator's record cache (see :meth:`count`)."""
        s = _serdes.resolve(serde, self.value_serde)
        return self._aggregate_fn(RunningReduce(fn, s, cache_limit(cache, cache_max_bytes)), s, name, "reduce")

    def aggregate(self, initializer: Callable[[], Any], adder: Callable[[Any, Any], Any],
                  serde: Serde[Any] | str | None = None, name: str | None = None, cache: bool | None = None,
                  cache_max_bytes: int | None = None) -> Stream:
        """Running ``adder(value, accumulator)`` per key starting from ``initializer()`` (``cache`` /
        ``cache_max_bytes``: see :meth:`count`)."""
        s = _serdes.resolve(serde, _serdes.JSON)
        return self._aggregate_fn(RunningAggregate(Aggregate(initializer, adder), s, cache_limit(cache, cache_max_bytes)),
                                  s, name, "aggregate")

    def count(self, name: str | None = None, cache: bool | None = None, cache_max_bytes: int | None = None) -> Stream:
        """Running count per key (INT64 values).

        Record cache (every running aggregation takes these; docs/semantics.md, "Record cache"): by default
        the ``record_cache_max_bytes`` setting decides (0, the default, = off: one update per record).
        ``cache=False`` turns it off for this operator, ``cache=True`` on (with the setting's budget,
        or 10 MiB when the setting is 0), ``cache_max_bytes=n`` on with this operator's own limit of
        ``n`` bytes per task (0 = off). With the cache on, downstream sees the last update per key per
        checkpoint (and when the cache is full) instead of one per record."""
        return self._aggregate_fn(RunningAggregate(Count(), _serdes.INT64, cache_limit(cache, cache_max_bytes)),
                                  _serdes.INT64, name, "count")

    def sum(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None,
            cache: bool | None = None, cache_max_bytes: int | None = None) -> Stream:
        """Running sum per key of the value (or ``value[field]`` / ``field(value)``; cache: see :meth:`count`)."""
        return self._aggregate_fn(RunningAggregate(Sum(extractor(field)), _serdes.JSON,
                                                   cache_limit(cache, cache_max_bytes)), _serdes.JSON, name, "sum")

    def min(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None,
            cache: bool | None = None, cache_max_bytes: int | None = None) -> Stream:
        """Running minimum per key (of the value, or ``value[field]`` / ``field(value)``; cache: see :meth:`count`)."""
        return self._aggregate_fn(RunningAggregate(Min(extractor(field)), _serdes.JSON,
                                                   cache_limit(cache, cache_max_bytes)), _serdes.JSON, name, "min")

    def max(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None,
            cache: bool | None = None, cache_max_bytes: int | None = None) -> Stream:
        """Running maximum per key (of the value, or ``value[field]`` / ``field(value)``; cache: see :meth:`count`)."""
        return self._aggregate_fn(RunningAggregate(Max(extractor(field)), _serdes.JSON,
                                                   cache_limit(cache, cache_max_bytes)), _serdes.JSON, name, "max")

    def interval_join(self, other: "KeyedStream") -> IntervalJoinBuilder[Stream]:
        """Interval join with another keyed stream: ``.between(lower_ms, upper_ms).apply(fn)``."""
        if not isinstance(other, KeyedStream):
            raise TypeError("interval_join needs a keyed stream on both sides: other.key_by(...)")
        return IntervalJoinBuilder(self, other)

    def join_table(self, table: Table, fn: Callable[[Any, Any], Any], how: str = "inner",
                   output_serde: Serde[Any] | None = None, name: str | None = None) -> Stream:
        """Look up each record's key in ``table`` (``app.table(...)``): ``fn(value, table_value)``;
        ``how="left"`` also emits when the key is absent (``table_value`` None)."""
        return join_table(self, table, fn, how, output_serde, name)

    # --- windows ---------------------------------------------------------------------------------

    def window(self, assigner: WindowAssigner) -> WindowedStream[Stream]:
        """Group each key's records into windows (see :mod:`kstreamlet.windowing`)::

            keyed.window(TumblingEventTimeWindows.of(5000)).aggregate(MyAgg())
        """
        return WindowedStream(self, assigner)

    def count_window(self, size: int, slide: int | None = None,
                     fn: Callable[[Any, list[Any], Callable[[Any], None]], None] | None = None,
                     output_serde: Serde[Any] | None = None, name: str | None = None) -> Stream:
        """Count windows: every ``slide`` (default ``size``) elements of a key, ``fn(key, last_size_elements, out)``
        runs (default: emits the element list). Tumbling when ``slide`` is None."""
        op = CountWindowOperator(size, slide, fn or (lambda key, items, out: out(items)), self.value_serde)
        node = KeyedProcessNode(op, self.key_serde, name or self._builder.generated_name("count-window"))
        return self._then(node, value_serde=output_serde or _serdes.JSON)


__all__ = ["Stream", "KeyedStream"]

"""Stream joins (seed 002, 双流Join): window joins, interval joins, stream–table joins.

Window join — all pairs of a key's elements that share a window (inner by default;
``how="left"``/``"outer"`` emit unmatched elements with ``None``, when the window fires)::

    orange.join(green).where(lambda o: o["k"]).equal_to(lambda g: g["k"]) \\
        .window(TumblingEventTimeWindows.of(2)).apply(lambda o, g: f"{o['v']},{g['v']}")

Interval join — ``left.ts + lower <= right.ts <= left.ts + upper`` (inclusive unless made
exclusive); output timestamp is the larger of the two; state is cleaned by the watermark::

    orange.key_by(k1).interval_join(green.key_by(k2)).between(-2, 1).apply(lambda o, g: (o, g))

Stream–table join — each stream record looks up the table's current value for its key::

    users = app.table("users", key_serde=serdes.STR, value_serde=serdes.JSON)
    clicks.key_by(lambda c: c["user"], key_serde=serdes.STR).join_table(users, lambda c, u: {**c, **u})

Both sides are repartitioned (or must be co-partitioned) so a key's records meet in one
task; their internal topics get the same partition count.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable

import structlog

from kstreamlet import metrics
from kstreamlet import serdes as _serdes
from kstreamlet.functions import KeyedContext, KeyedProcessFunction, RuntimeContext
from kstreamlet.serdes import Serde
from kstreamlet.state.keyed import _decode_list, _encode_list, key_prefix
from kstreamlet.windowing.assigners import TimeWindow, WindowAssigner
from kstreamlet.windowing.operator import Trigger, WindowFunction, WindowOperator

_log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from kstreamlet.dsl.stream import KeyedStream, Stream

_TS = struct.Struct(">Q")
_BIAS = 2**63
LEFT, RIGHT = 0, 1


def _tagged_union(left: "KeyedStream", right: "KeyedStream", name: str) -> "KeyedStream":
    """One keyed stream of ``(side, value)`` from two co-partitioned keyed streams."""
    from kstreamlet.dsl.stream import KeyedStream
    from kstreamlet.topology.nodes import MapNode, MergeNode

    merged = MergeNode(name=f"{name}-union")
    for side, s in ((LEFT, left), (RIGHT, right)):
        tag = MapNode(lambda v, side=side: (side, v), name=f"{name}-tag{side}")
        s._attach(tag)
        tag.add_child(merged)
    return KeyedStream(left._app, merged, left.key_serde, left.value_serde, watermarks=left.watermarks)


def _pair_codec(ls: Serde[Any], rs: Serde[Any]) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    def ser(acc: list[list[Any]]) -> bytes:
        return _encode_list([_encode_list([ls.serialize(v) for v in acc[0]]),
                             _encode_list([rs.serialize(v) for v in acc[1]])])

    def de(raw: bytes) -> list[list[Any]]:
        a, b = _decode_list(raw)
        return [[ls.deserialize(x) for x in _decode_list(a)], [rs.deserialize(x) for x in _decode_list(b)]]

    return ser, de


class JoinBuilder:
    """``a.join(b)``: then ``.where(key_a).equal_to(key_b).window(assigner).apply(fn)``."""

    def __init__(self, left: "Stream", right: "Stream", how: str) -> None:
        if how not in ("inner", "left", "outer"):
            raise ValueError("how must be 'inner', 'left' or 'outer'")
        self._left, self._right, self._how = left, right, how
        self._key_left: Callable[[Any], Any] | None = None
        self._key_right: Callable[[Any], Any] | None = None
        self._key_serde: Serde[Any] = _serdes.JSON
        self._assigner: WindowAssigner | None = None
        self._lateness = 0

    def where(self, key_fn: Callable[[Any], Any], key_serde: Serde[Any] | None = None) -> "JoinBuilder":
        self._key_left = key_fn
        if key_serde is not None:
            self._key_serde = key_serde
        return self

    def equal_to(self, key_fn: Callable[[Any], Any]) -> "JoinBuilder":
        self._key_right = key_fn
        return self

    def window(self, assigner: WindowAssigner) -> "JoinBuilder":
        self._assigner = assigner
        return self

    def allowed_lateness(self, ms: int) -> "JoinBuilder":
        self._lateness = ms
        return self

    def apply(self, fn: Callable[[Any, Any], Any], output_serde: Serde[Any] | None = None,
              name: str | None = None) -> "Stream":
        """``fn(left, right)`` per pair (``None`` on the missing side for left/outer joins);
        a ``None`` result emits nothing."""
        from kstreamlet.topology.nodes import KeyedProcessNode

        if self._key_left is None or self._key_right is None or self._assigner is None:
            raise ValueError("a window join needs .where(...), .equal_to(...) and .window(...) before .apply(...)")
        app = self._left._app
        name = name or f"join-{app._next_op_id()}"
        lk = self._left.key_by(self._key_left, key_serde=self._key_serde, name=f"{name}-left")
        rk = self._right.key_by(self._key_right, key_serde=self._key_serde, name=f"{name}-right")
        union = _tagged_union(lk, rk, name)
        ser, de = _pair_codec(lk.value_serde, rk.value_serde)
        how = self._how

        def emit(key: Any, w: TimeWindow, acc: list[list[Any]], out: Callable[[Any], None]) -> None:
            lefts, rights = acc
            for lv in lefts:
                if rights:
                    for rv in rights:
                        r = fn(lv, rv)
                        if r is not None:
                            out(r)
                elif how in ("left", "outer"):
                    r = fn(lv, None)
                    if r is not None:
                        out(r)
            if how == "outer" and not lefts:
                for rv in rights:
                    r = fn(None, rv)
                    if r is not None:
                        out(r)

        def add(v: tuple[int, Any], acc: list[list[Any]]) -> list[list[Any]]:
            acc[v[0]].append(v[1])
            return acc

        wf = WindowFunction(create=lambda: [[], []], add=add, merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
                            emit=emit, serialize=ser, deserialize=de)
        op = WindowOperator(self._assigner, wf, Trigger(), self._lateness, None, False)
        return union._then(KeyedProcessNode(op, union.key_serde, name), value_serde=output_serde or _serdes.JSON)


class IntervalJoinBuilder:
    """``left.interval_join(right).between(lower, upper)[.lower_bound_exclusive()...].apply(fn)``."""

    def __init__(self, left: "KeyedStream", right: "KeyedStream") -> None:
        self._left, self._right = left, right
        self._lower: int | None = None
        self._upper: int | None = None
        self._lower_inclusive = True
        self._upper_inclusive = True

    def between(self, lower_ms: int, upper_ms: int) -> "IntervalJoinBuilder":
        if lower_ms > upper_ms:
            raise ValueError(f"lower bound {lower_ms} must be <= upper bound {upper_ms}")
        self._lower, self._upper = lower_ms, upper_ms
        return self

    def lower_bound_exclusive(self) -> "IntervalJoinBuilder":
        self._lower_inclusive = False
        return self

    def upper_bound_exclusive(self) -> "IntervalJoinBuilder":
        self._upper_inclusive = False
        return self

    def apply(self, fn: Callable[[Any, Any], Any], output_serde: Serde[Any] | None = None,
              name: str | None = None) -> "Stream":
        """``fn(left, right)`` per matching pair; a ``None`` result emits nothing."""
        from kstreamlet.topology.nodes import KeyedProcessNode

        if self._lower is None or self._upper is None:
            raise ValueError("an interval join needs .between(lower, upper)")
        app = self._left._app
        name = name or f"interval-join-{app._next_op_id()}"
        union = _tagged_union(self._left, self._right, name)
        lower = self._lower + (0 if self._lower_inclusive else 1)
        upper = self._upper - (0 if self._upper_inclusive else 1)
        op = IntervalJoinOperator(lower, upper, fn, self._left.value_serde, self._right.value_serde)
        return union._then(KeyedProcessNode(op, union.key_serde, name), value_serde=output_serde or _serdes.JSON)


class IntervalJoinOperator(KeyedProcessFunction):
    """Buffers both sides per key by timestamp; joins on arrival; the watermark cleans up."""

    def __init__(self, lower: int, upper: int, fn: Callable[[Any, Any], Any], left_serde: Serde[Any],
                 right_serde: Serde[Any]) -> None:
        self.lower, self.upper, self.fn = lower, upper, fn
        self.serdes = (left_serde, right_serde)

    def open(self, ctx: RuntimeContext) -> None:
        self.store = ctx._task.store(ctx._node.store_name("buffers"))

    def _entry(self, prefix: bytes, side: int, ts: int) -> bytes:
        return prefix + bytes((side,)) + _TS.pack(ts + _BIAS)

    def _scan(self, prefix: bytes, side: int, lo: int, hi: int) -> list[tuple[int, list[Any]]]:
        de = self.serdes[side].deserialize
        n = len(prefix) + 1
        out = []
        for k, raw in self.store.iter_range(self._entry(prefix, side, lo), self._entry(prefix, side, hi + 1)):
            out.append((_TS.unpack_from(k, n)[0] - _BIAS, [de(b) for b in _decode_list(raw)]))
        return out

    def process_element(self, value: tuple[int, Any], ctx: KeyedContext) -> None:
        side, v = value
        ts = ctx.timestamp
        if ts <= ctx.current_watermark:
            # Late: a watermark W promises no more timestamps <= W, and buffers up to W are already
            # cleaned, so it could not be matched consistently (Flink drops late elements too).
            metrics.LATE_RECORDS.labels("interval_join").inc()
            _log.debug("late record dropped", operator="interval_join", side=side, timestamp=ts,
                       watermark=ctx.current_watermark)
            return
        prefix = key_prefix(ctx._task.keyctx.key_bytes)
        k = self._entry(prefix, side, ts)
        raw = self.store.get(k)
        self.store.put(k, (raw or b"") + _encode_list([self.serdes[side].serialize(v)]))
        if side == LEFT:
            matches = self._scan(prefix, RIGHT, ts + self.lower, ts + self.upper)
            for rts, rights in matches:
                for rv in rights:
                    self._out(ctx, v, rv, max(ts, rts))
            ctx.timers.register_event_time(ts + self.upper)  # no right element can match after this
        else:
            matches = self._scan(prefix, LEFT, ts - self.upper, ts - self.lower)
            for lts, lefts in matches:
                for lv in lefts:
                    self._out(ctx, lv, v, max(ts, lts))
            ctx.timers.register_event_time(ts - self.lower)
        ctx.timestamp = ts

    def _out(self, ctx: KeyedContext, lv: Any, rv: Any, ts: int) -> None:
        r = self.fn(lv, rv)
        if r is not None:
            ctx.emit(r, timestamp=ts)

    def on_timer(self, ts: int, ctx: KeyedContext) -> None:
        prefix = key_prefix(ctx._task.keyctx.key_bytes)
        for k, _ in list(self.store.iter_range(self._entry(prefix, LEFT, -(2**62)), self._entry(prefix, LEFT, ts - self.upper + 1))):
            self.store.delete(k)
        for k, _ in list(self.store.iter_range(self._entry(prefix, RIGHT, -(2**62)), self._entry(prefix, RIGHT, ts + self.lower + 1))):
            self.store.delete(k)


class Table:
    """A table materialized from a (compacted) topic: latest value per key; ``None`` deletes."""

    def __init__(self, app: Any, topic: str, source: "KeyedStream", name: str) -> None:
        self.app, self.topic, self.source, self.name = app, topic, source, name


class TableJoinOperator(KeyedProcessFunction):
    def __init__(self, fn: Callable[[Any, Any], Any], how: str, table_serde: Serde[Any]) -> None:
        self.fn, self.how, self.table_serde = fn, how, table_serde

    def open(self, ctx: RuntimeContext) -> None:
        from kstreamlet.state.keyed import ValueStateDescriptor

        self.table = ctx.get_state(ValueStateDescriptor("table", self.table_serde))

    def process_element(self, value: tuple[int, Any], ctx: KeyedContext) -> None:
        side, v = value
        if side == RIGHT:
            self.table.update(v)  # None (tombstone) clears
            return
        current = self.table.value()
        if current is None and self.how == "inner":
            return
        r = self.fn(v, current)
        if r is not None:
            ctx.emit(r)


def join_table(stream: "KeyedStream", table: Table, fn: Callable[[Any, Any], Any], how: str,
               output_serde: Serde[Any] | None, name: str | None) -> "Stream":
    from kstreamlet.topology.nodes import KeyedProcessNode

    if how not in ("inner", "left"):
        raise ValueError("a stream-table join is 'inner' or 'left'")
    name = name or f"table-join-{table.name}-{stream._app._next_op_id()}"
    union = _tagged_union(stream, table.source, name)
    op = TableJoinOperator(fn, how, table.source.value_serde)
    return union._then(KeyedProcessNode(op, union.key_serde, name), value_serde=output_serde or _serdes.JSON)

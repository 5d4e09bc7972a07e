"""Stream joins: window joins, co-groups, interval joins, stream–table joins.

Window join — all pairs of a key's elements that share a window (inner by default;
``how="left"``/``"outer"`` emit unmatched elements with ``None``, when the window fires)::

    orange.join(green).where(lambda o: o["k"]).equal_to(lambda g: g["k"]) \\
        .window(TumblingEventTimeWindows.of(2)).apply(lambda o, g: f"{o['v']},{g['v']}")

Windowed co-group — once per key and window, all elements of both inputs (one list may be
empty), when the window fires::

    orange.co_group(green).where(lambda o: o["k"]).equal_to(lambda g: g["k"]) \\
        .window(TumblingEventTimeWindows.of(2)).apply(lambda os, gs: [len(os) - len(gs)])

Interval join — ``left.ts + lower <= right.ts <= left.ts + upper`` (inclusive unless made
exclusive); output timestamp is the larger of the two; state is cleaned by the watermark::

    orange.key_by(k1).interval_join(green.key_by(k2)).between(-2, 1).apply(lambda o, g: (o, g))

Stream–table join — each stream record looks up the table's current value for its key::

    users = app.table("users", key_serde=serdes.STR, value_serde=serdes.JSON)
    clicks.key_by(lambda c: c["user"], key_serde=serdes.STR).join_table(users, lambda c, u: {**c, **u})

Both sides are repartitioned (or must be co-partitioned) so a key's records meet in one
task; their internal topics get the same partition count. The operators are in
:mod:`kstreamlet.operators.joins`.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterable, Self

from kstreamlet import serdes as _serdes
from kstreamlet.dsl.handle import Handle, S
from kstreamlet.eventtime import Duration, to_millis
from kstreamlet.operators.joins import (
    LEFT,
    RIGHT,
    CoGroupEmit,
    IntervalJoinOperator,
    TableJoinOperator,
    window_co_group_function,
    window_join_function,
)
from kstreamlet.dsl.windowed import check_trigger
from kstreamlet.operators.window_general import window_operator
from kstreamlet.serdes import Serde
from kstreamlet.topology.nodes import KeyedProcessNode, MapNode, MergeNode
from kstreamlet.windowing.assigners import TimeWindow, WindowAssigner
from kstreamlet.windowing.triggers import Trigger


def _lateness(ms: Duration) -> int:
    n = to_millis(ms, "allowed lateness")
    if n < 0:
        raise ValueError("allowed lateness must be >= 0 ms")
    return n


def _tagger(side: int) -> Callable[[Any], tuple[int, Any]]:
    return lambda v: (side, v)


def tagged_union(left: Handle[S], right: Handle[Any], name: str) -> Handle[S]:
    """One stream of ``(side, value)`` (``LEFT`` / ``RIGHT``) from two streams, for the operators
    of two inputs (joins, co-groups, connected streams); keyed inputs must be co-partitioned."""
    merged = MergeNode(name=f"{name}-union")
    for side, s in ((LEFT, left), (RIGHT, right)):
        tag = MapNode(_tagger(side), name=f"{name}-tag{side}")
        s._attach(tag)
        tag.add_child(merged)
    return left._derive_keyed(merged)


class _WindowedPairBuilder(Generic[S]):
    """What window joins and co-groups share: ``.where(key_a).equal_to(key_b).window(assigner)``
    and the plan they build (both sides keyed by their key function, a tagged union, a window
    operator over it)."""

    #: Names the operation in the error for a missing step, and its default node name.
    _what = ""
    _prefix = ""

    def __init__(self, left: Handle[S], right: Handle[Any]) -> None:
        self._left, self._right = left, right
        self._key_left: Callable[[Any], Any] | None = None
        self._key_right: Callable[[Any], Any] | None = None
        self._key_serde: Serde[Any] = _serdes.JSON
        self._assigner: WindowAssigner | None = None
        self._trigger: Trigger | None = None  # the assigner's default
        self._lateness = 0

    def where(self, key_fn: Callable[[Any], Any], key_serde: Serde[Any] | None = None) -> Self:
        self._key_left = key_fn
        if key_serde is not None:
            self._key_serde = key_serde
        return self

    def equal_to(self, key_fn: Callable[[Any], Any]) -> Self:
        self._key_right = key_fn
        return self

    def window(self, assigner: WindowAssigner) -> Self:
        self._assigner = assigner
        return self

    def allowed_lateness(self, ms: Duration) -> Self:
        """As ``WindowedStream.allowed_lateness`` (ms or ``timedelta``): a window is late once
        ``max timestamp + ms <= watermark`` (saturated to int64); a late element within it fires
        the window again, with all its elements."""
        self._lateness = _lateness(ms)
        return self

    def _build(self, window_fn: Callable[[Serde[Any], Serde[Any]], Any], output_serde: Serde[Any] | None,
               name: str | None) -> S:
        if self._key_left is None or self._key_right is None or self._assigner is None:
            raise ValueError(f"a {self._what} needs .where(...), .equal_to(...) and .window(...) before .apply(...)")
        name = name or self._left._builder.generated_name(self._prefix)
        lk = self._left.key_by(self._key_left, key_serde=self._key_serde, name=f"{name}-left")
        rk = self._right.key_by(self._key_right, key_serde=self._key_serde, name=f"{name}-right")
        union = tagged_union(lk, rk, name)
        if self._trigger is not None:
            check_trigger(self._trigger, self._assigner)
        op = window_operator(self._assigner, window_fn(lk.value_serde, rk.value_serde), self._trigger,
                             self._lateness, None)
        return union._then(KeyedProcessNode(op, union.key_serde, name), value_serde=output_serde or _serdes.JSON)


class JoinBuilder(_WindowedPairBuilder[S]):
    """``a.join(b)``: then ``.where(key_a).equal_to(key_b).window(assigner).apply(fn)``."""

    _what, _prefix = "window join", "join"

    def __init__(self, left: Handle[S], right: Handle[Any], how: str) -> None:
        if how not in ("inner", "left", "outer"):
            raise ValueError("how must be 'inner', 'left' or 'outer'")
        super().__init__(left, right)
        self._how = how

    def apply(self, fn: Callable[[Any, Any], Any], output_serde: Serde[Any] | None = None,
              name: str | None = None) -> S:
        """``fn(left, right)`` per pair (``None`` on the missing side for left/outer joins);
        a ``None`` result emits nothing."""
        return self._build(lambda ls, rs: window_join_function(fn, self._how, ls, rs), output_serde, name)


class CoGroupBuilder(_WindowedPairBuilder[S]):
    """``a.co_group(b)``: then ``.where(key_a).equal_to(key_b).window(assigner)`` and ``.apply(fn)``
    (``fn(lefts, rights)`` returns an iterable of outputs) or ``.process(fn)`` (``fn(key, window,
    lefts, rights, out)``). Called once per key and window when the window fires, with all of the
    window's elements of both inputs; a key seen on one side only gets an empty list for the other
    (Flink's ``CoGroupedStreams``). Outputs carry the key and the window's ``max_timestamp``."""

    _what, _prefix = "co_group", "co-group"

    def trigger(self, trigger: Trigger) -> "CoGroupBuilder[S]":
        """Replace the default time trigger, as ``WindowedStream.trigger`` (Flink's ``WithWindow.trigger``)."""
        self._trigger = trigger
        return self

    def process(self, fn: CoGroupEmit, output_serde: Serde[Any] | None = None, name: str | None = None) -> S:
        """``fn(key, window, lefts, rights, out)``; ``out(value)`` emits."""
        return self._build(lambda ls, rs: window_co_group_function(fn, ls, rs), output_serde, name)

    def apply(self, fn: Callable[[list[Any], list[Any]], Iterable[Any] | None],
              output_serde: Serde[Any] | None = None, name: str | None = None) -> S:
        """Flink's ``CoGroupFunction``: ``fn(lefts, rights)`` returns the outputs (an iterable,
        e.g. a generator; ``None``: nothing)."""
        def emit(key: Any, w: TimeWindow, lefts: list[Any], rights: list[Any], out: Callable[[Any], None]) -> None:
            r = fn(lefts, rights)
            if r is not None:
                for v in r:
                    out(v)

        return self.process(emit, output_serde, name)


class IntervalJoinBuilder(Generic[S]):
    """``left.interval_join(right).between(lower, upper)[.lower_bound_exclusive()...].apply(fn)``."""

    def __init__(self, left: Handle[S], right: Handle[Any]) -> None:
        self._left, self._right = left, right
        self._lower: int | None = None
        self._upper: int | None = None
        self._lower_inclusive = True
        self._upper_inclusive = True
        self._left_late_tag: str | None = None
        self._right_late_tag: str | None = None

    def between(self, lower: Duration, upper: Duration) -> "IntervalJoinBuilder[S]":
        """``left.ts + lower <= right.ts <= left.ts + upper``; bounds in ms or ``timedelta`` (negative allowed)."""
        lower_ms, upper_ms = to_millis(lower, "interval join lower bound"), to_millis(upper, "interval join upper bound")
        if lower_ms > upper_ms:
            raise ValueError(f"lower bound {lower_ms} must be <= upper bound {upper_ms}")
        self._lower, self._upper = lower_ms, upper_ms
        return self

    def lower_bound_exclusive(self) -> "IntervalJoinBuilder[S]":
        self._lower_inclusive = False
        return self

    def upper_bound_exclusive(self) -> "IntervalJoinBuilder[S]":
        self._upper_inclusive = False
        return self

    def side_output_left_late_data(self, tag: str) -> "IntervalJoinBuilder[S]":
        """Left elements behind the watermark (``ts < watermark``) go to ``.side_output(tag)`` of the
        result stream (with their key and timestamp) instead of being dropped."""
        self._left_late_tag = tag
        return self

    def side_output_right_late_data(self, tag: str) -> "IntervalJoinBuilder[S]":
        """As :meth:`side_output_left_late_data`, for the right side (may be the same tag)."""
        self._right_late_tag = tag
        return self

    def apply(self, fn: Callable[[Any, Any], Any], output_serde: Serde[Any] | None = None,
              name: str | None = None) -> S:
        """``fn(left, right)`` per matching pair; a ``None`` result emits nothing. Late elements go
        to the side outputs set with ``side_output_left_late_data`` / ``..._right_late_data``."""
        if self._lower is None or self._upper is None:
            raise ValueError("an interval join needs .between(lower, upper)")
        name = name or self._left._builder.generated_name("interval-join")
        union = tagged_union(self._left, self._right, name)
        lower = self._lower + (0 if self._lower_inclusive else 1)
        upper = self._upper - (0 if self._upper_inclusive else 1)
        op = IntervalJoinOperator(lower, upper, fn, self._left.value_serde, self._right.value_serde,
                                  self._left_late_tag, self._right_late_tag)
        return union._then(KeyedProcessNode(op, union.key_serde, name), value_serde=output_serde or _serdes.JSON)


class Table:
    """A table materialized from a (compacted) topic: latest value per key; ``None`` deletes."""

    def __init__(self, topic: str, source: Handle[Any], name: str) -> None:
        self.topic, self.source, self.name = topic, source, name


def join_table(stream: Handle[S], table: Table, fn: Callable[[Any, Any], Any], how: str,
               output_serde: Serde[Any] | None, name: str | None) -> S:
    """``keyed.join_table(table, fn)``: each record looks up its key's current table value."""
    if how not in ("inner", "left"):
        raise ValueError("a stream-table join is 'inner' or 'left'")
    name = name or stream._builder.generated_name(f"table-join-{table.name}")
    union = tagged_union(stream, table.source, name)
    op = TableJoinOperator(fn, how, table.source.value_serde)
    return union._then(KeyedProcessNode(op, union.key_serde, name), value_serde=output_serde or _serdes.JSON)


__all__ = ["CoGroupBuilder", "JoinBuilder", "IntervalJoinBuilder", "Table", "join_table"]

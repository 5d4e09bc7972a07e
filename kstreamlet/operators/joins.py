"""Join operators: window joins (a window function over both sides), interval joins, stream–table joins.

Both inputs arrive as one keyed stream of ``(side, value)`` (``LEFT`` or ``RIGHT``); the
builders in :mod:`kstreamlet.dsl.joins` make that union.
"""

from __future__ import annotations

from typing import Any, Callable

import structlog

from kstreamlet import metrics
from kstreamlet.api.context import KeyedContext, RuntimeContext
from kstreamlet.api.functions import KeyedProcessFunction
from kstreamlet.operators.window import WindowFunction
from kstreamlet.serdes import Serde
from kstreamlet.state.codec import BIAS, TIMESTAMP, decode_list, encode_list, key_prefix
from kstreamlet.state.keyed import ValueStateDescriptor
from kstreamlet.windowing.assigners import TimeWindow

_log = structlog.get_logger(__name__)

LEFT, RIGHT = 0, 1
_pack_ts = TIMESTAMP.pack
_unpack_ts = TIMESTAMP.unpack_from


def _pair_codec(ls: Serde[Any], rs: Serde[Any]) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    def ser(acc: list[list[Any]]) -> bytes:
        return encode_list([encode_list([ls.serialize(v) for v in acc[0]]),
                            encode_list([rs.serialize(v) for v in acc[1]])])

    def de(raw: bytes) -> list[list[Any]]:
        a, b = decode_list(raw)
        return [[ls.deserialize(x) for x in decode_list(a)], [rs.deserialize(x) for x in decode_list(b)]]

    return ser, de


def window_join_function(fn: Callable[[Any, Any], Any], how: str, left_serde: Serde[Any],
                         right_serde: Serde[Any]) -> WindowFunction:
    """A window's contents are ``[lefts, rights]``; when it fires, ``fn(left, right)`` per pair
    (``None`` on the missing side for ``left``/``outer``); a ``None`` result emits nothing."""
    ser, de = _pair_codec(left_serde, right_serde)

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

    return WindowFunction(create=lambda: [[], []], add=add, merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
                          emit=emit, serialize=ser, deserialize=de)


class IntervalJoinOperator(KeyedProcessFunction):
    """Buffers both sides per key by timestamp; joins on arrival; the watermark cleans up."""

    def __init__(self, lower: int, upper: int, fn: Callable[[Any, Any], Any], left_serde: Serde[Any],
                 right_serde: Serde[Any]) -> None:
        self.lower, self.upper, self.fn = lower, upper, fn
        self.serdes = (left_serde, right_serde)

    def open(self, ctx: RuntimeContext) -> None:
        self.store = ctx.raw_store("buffers")

    def _entry(self, prefix: bytes, side: int, ts: int) -> bytes:
        return prefix + bytes((side,)) + _pack_ts(ts + BIAS)

    def _scan(self, prefix: bytes, side: int, lo: int, hi: int) -> list[tuple[int, list[Any]]]:
        de = self.serdes[side].deserialize
        n = len(prefix) + 1
        out = []
        for k, raw in self.store.iter_range(self._entry(prefix, side, lo), self._entry(prefix, side, hi + 1)):
            out.append((_unpack_ts(k, n)[0] - BIAS, [de(b) for b in decode_list(raw)]))
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
        prefix = key_prefix(ctx.key_bytes)
        k = self._entry(prefix, side, ts)
        raw = self.store.get(k)
        self.store.put(k, (raw or b"") + encode_list([self.serdes[side].serialize(v)]))
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
        prefix = key_prefix(ctx.key_bytes)
        for k, _ in list(self.store.iter_range(self._entry(prefix, LEFT, -(2**62)), self._entry(prefix, LEFT, ts - self.upper + 1))):
            self.store.delete(k)
        for k, _ in list(self.store.iter_range(self._entry(prefix, RIGHT, -(2**62)), self._entry(prefix, RIGHT, ts + self.lower + 1))):
            self.store.delete(k)


class TableJoinOperator(KeyedProcessFunction):
    """The table side (``RIGHT``) updates the key's value; each stream element (``LEFT``) looks it up."""

    def __init__(self, fn: Callable[[Any, Any], Any], how: str, table_serde: Serde[Any]) -> None:
        self.fn, self.how, self.table_serde = fn, how, table_serde

    def open(self, ctx: RuntimeContext) -> None:
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


__all__ = ["LEFT", "RIGHT", "window_join_function", "IntervalJoinOperator", "TableJoinOperator"]

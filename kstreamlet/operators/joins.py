"""Join operators: window joins and co-groups (a window function over both sides), interval joins, stream–table joins.

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
from kstreamlet.state.codec import BIAS, MAX_TIMESTAMP, MIN_TIMESTAMP, TIMESTAMP, decode_list, encode_list, key_prefix
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


CoGroupEmit = Callable[[Any, TimeWindow, list[Any], list[Any], Callable[[Any], None]], None]


def window_co_group_function(emit: CoGroupEmit, left_serde: Serde[Any], right_serde: Serde[Any]) -> WindowFunction:
    """A window's contents are ``[lefts, rights]`` (in arrival order); when it fires,
    ``emit(key, window, lefts, rights, out)`` once per key and window — a window exists once
    either side has an element in it, so one of the lists may be empty (Flink's ``CoGroupedStreams``)."""
    ser, de = _pair_codec(left_serde, right_serde)

    def fire(key: Any, w: TimeWindow, acc: list[list[Any]], out: Callable[[Any], None]) -> None:
        emit(key, w, acc[0], acc[1], out)

    def add(v: tuple[int, Any], acc: list[list[Any]]) -> list[list[Any]]:
        acc[v[0]].append(v[1])
        return acc

    return WindowFunction(create=lambda: [[], []], add=add, merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
                          emit=fire, serialize=ser, deserialize=de)


def window_join_function(fn: Callable[[Any, Any], Any], how: str, left_serde: Serde[Any],
                         right_serde: Serde[Any]) -> WindowFunction:
    """A co-group (:func:`window_co_group_function`) that, when a window fires, calls ``fn(left, right)``
    per pair (``None`` on the missing side for ``left``/``outer``); a ``None`` result emits nothing."""

    def emit(key: Any, w: TimeWindow, lefts: list[Any], rights: list[Any], out: Callable[[Any], None]) -> None:
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

    return window_co_group_function(emit, left_serde, right_serde)


class IntervalJoinOperator(KeyedProcessFunction):
    """Buffers both sides per key by timestamp; joins on arrival; the watermark cleans up.

    Lateness is Flink's rule: an element is late when ``ts < watermark`` (one *at* the watermark
    is joined). Buffers are kept until no on-time element can match them any more: a left
    element ``l`` matches right elements ``r <= l + upper``, and an on-time ``r`` has ``r >=
    watermark``, so ``l`` is dropped once the watermark passes ``l + upper`` (its timer at ``l +
    upper + 1``); a right element ``r`` once it passes ``r - lower``. (Flink's operator drops
    ``l`` at watermark ``l + upper``, so an element exactly at the watermark can miss a match
    there; here it cannot.) Timer times saturate to int64 (:mod:`kstreamlet.runtime.timers`).
    """

    def __init__(self, lower: int, upper: int, fn: Callable[[Any, Any], Any], left_serde: Serde[Any],
                 right_serde: Serde[Any], left_late_tag: str | None = None,
                 right_late_tag: str | None = None) -> None:
        self.lower, self.upper, self.fn = lower, upper, fn
        self.serdes = (left_serde, right_serde)
        # Late elements of a side go to its side output when tagged (Flink's sideOutputLeftLateData
        # / sideOutputRightLateData), else they are dropped.
        self.late_tags = (left_late_tag, right_late_tag)
        # A buffered element's cleanup timer is at its timestamp + these.
        self._left_cleanup = upper + 1
        self._right_cleanup = 1 - lower

    def open(self, ctx: RuntimeContext) -> None:
        self.store = ctx.raw_store("buffers")

    def _entry(self, prefix: bytes, side: int, ts: int) -> bytes:
        return prefix + bytes((side,)) + _pack_ts(ts + BIAS)

    def _bound(self, prefix: bytes, side: int, ts: int) -> bytes:
        """The store key where ``side``'s entries at ``ts`` start, for ``ts`` past int64 too: before
        every entry of the side below ``MIN_TIMESTAMP``, after every one above ``MAX_TIMESTAMP``."""
        if ts > MAX_TIMESTAMP:
            return prefix + bytes((side + 1,))
        if ts < MIN_TIMESTAMP:
            return prefix + bytes((side,))
        return prefix + bytes((side,)) + _pack_ts(ts + BIAS)

    def _scan(self, prefix: bytes, side: int, lo: int, hi: int) -> list[tuple[int, list[Any]]]:
        de = self.serdes[side].deserialize
        n = len(prefix) + 1
        out = []
        for k, raw in self.store.iter_range(self._bound(prefix, side, lo), self._bound(prefix, side, hi + 1)):
            out.append((_unpack_ts(k, n)[0] - BIAS, [de(b) for b in decode_list(raw)]))
        return out

    def process_element(self, value: tuple[int, Any], ctx: KeyedContext) -> None:
        side, v = value
        ts = ctx.timestamp
        if ts < ctx.current_watermark:
            # Late (Flink's IntervalJoinOperator.isLate: ts < watermark): the buffers it could match
            # may be cleaned already, so it could not be joined consistently: dropped, or sent to
            # the side's late-data output (Flink too).
            metrics.LATE_RECORDS.labels("interval_join").inc()
            tag = self.late_tags[side]
            _log.debug("late record", operator="interval_join", side=side, timestamp=ts,
                       watermark=ctx.current_watermark, side_output=tag is not None)
            if tag is not None:
                ctx.side_output(tag, v)
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
            ctx.timers.register_event_time(ts + self._left_cleanup)  # no on-time right element matches after
        else:
            matches = self._scan(prefix, LEFT, ts - self.upper, ts - self.lower)
            for lts, lefts in matches:
                for lv in lefts:
                    self._out(ctx, lv, v, max(ts, lts))
            ctx.timers.register_event_time(ts + self._right_cleanup)
        ctx.timestamp = ts

    def _out(self, ctx: KeyedContext, lv: Any, rv: Any, ts: int) -> None:
        r = self.fn(lv, rv)
        if r is not None:
            ctx.emit(r, timestamp=ts)

    def on_timer(self, ts: int, ctx: KeyedContext) -> None:
        prefix = key_prefix(ctx.key_bytes)
        store = self.store
        if ts >= MAX_TIMESTAMP:
            # The end of time (also where saturated timers land): nothing is left to match.
            for k, _ in list(store.iter_prefix(prefix)):
                store.delete(k)
            return
        # Left l is needed while watermark <= l + upper, right r while watermark <= r - lower.
        left_end, right_end = ts - self.upper, ts + self.lower
        for side, end in ((LEFT, left_end), (RIGHT, right_end)):
            for k, _ in list(store.iter_range(prefix + bytes((side,)), self._bound(prefix, side, end))):
                store.delete(k)
        # Buffers written before this rule had their timer 1 ms earlier (at l + upper, r - lower):
        # such a timer finds its own entry still needed, so clean it up 1 ms later.
        if ((MIN_TIMESTAMP <= left_end <= MAX_TIMESTAMP and store.get(self._entry(prefix, LEFT, left_end)) is not None)
                or (MIN_TIMESTAMP <= right_end <= MAX_TIMESTAMP
                    and store.get(self._entry(prefix, RIGHT, right_end)) is not None)):
            ctx.timers.register_event_time(ts + 1)


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


__all__ = ["LEFT", "RIGHT", "window_co_group_function", "window_join_function", "IntervalJoinOperator", "TableJoinOperator"]

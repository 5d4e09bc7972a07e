"""The window operators: windows as keyed state plus timers (Flink's ``WindowOperator``), and count windows.

Per key, each live window's contents are one state entry
``key | start | end -> count | accumulator``. Contents are an accumulator of a
:class:`WindowFunction` (incremental ``reduce``/``aggregate``, or the element list for
full-window functions and joins). A window fires when the watermark (or processing
time) passes its ``max_timestamp`` — registered as a timer, so it fires after a restart,
exactly once under exactly-once — and its state is dropped ``allowed_lateness`` later.
A late element within the allowed lateness updates the window and fires it again; a
later one goes to the late-data side output (or is dropped). Session windows merge.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, cast

import structlog

from kstreamlet import metrics
from kstreamlet import serdes as _serdes
from kstreamlet.api.context import KeyedContext, RuntimeContext
from kstreamlet.api.functions import KeyedProcessFunction
from kstreamlet.serdes import Serde
from kstreamlet.state.codec import BIAS, WINDOW, key_prefix, list_codec
from kstreamlet.state.keyed import AggregateFunction, ListStateDescriptor, ValueStateDescriptor
from kstreamlet.windowing.assigners import TimeWindow, WindowAssigner
from kstreamlet.windowing.triggers import Trigger

_log = structlog.get_logger(__name__)

_CNT = struct.Struct(">q")


@dataclass
class WindowFunction:
    """How window contents accumulate and what a firing emits.

    ``emit(key, window, accumulator, out)`` calls ``out(value)`` for each output.
    """

    create: Callable[[], Any]
    add: Callable[[Any, Any], Any]  # (value, acc) -> acc
    merge: Callable[[Any, Any], Any]
    emit: Callable[[Any, TimeWindow, Any, Callable[[Any], None]], None]
    serialize: Callable[[Any], bytes]
    deserialize: Callable[[bytes], Any]


WindowEmit = Callable[[Any, TimeWindow, Any, Callable[[Any], None]], None]


_pack_window = WINDOW.pack
_unpack_window = WINDOW.unpack_from


def _win_key(prefix: bytes, w: TimeWindow) -> bytes:
    """:func:`kstreamlet.state.codec.window_key`, inlined for the record path."""
    return prefix + _pack_window(w.start + BIAS, w.end + BIAS)


def _decode_window(raw: bytes, n: int) -> TimeWindow:
    s, e = _unpack_window(raw, n)
    return TimeWindow(s - BIAS, e - BIAS)


def emit_result(key: Any, w: TimeWindow, acc: Any, out: Callable[[Any], None]) -> None:
    """The default window emit: the result itself."""
    out(acc)


def reduce_function(fn: Callable[[Any, Any], Any], serde: Serde[Any], emit: WindowEmit | None = None) -> WindowFunction:
    """Incremental ``fn(acc, value)``; an empty accumulator is stored as ``b""``, a value as ``0x01 | value``."""
    ser, de = serde.serialize, serde.deserialize
    return WindowFunction(
        create=lambda: None,
        add=lambda v, acc: v if acc is None else fn(acc, v),
        merge=lambda a, b: b if a is None else a if b is None else fn(a, b),
        emit=emit or emit_result,
        serialize=lambda acc: b"" if acc is None else b"\x01" + ser(acc),
        deserialize=lambda raw: None if not raw else de(raw[1:]),
    )


def aggregate_function(agg: AggregateFunction[Any, Any, Any], accumulator_serde: Serde[Any] | None = None,
                       emit: WindowEmit | None = None) -> WindowFunction:
    """An :class:`~kstreamlet.state.keyed.AggregateFunction`; emits ``get_result`` (through ``emit`` if given)."""
    s = accumulator_serde or _serdes.JSON
    out = emit or emit_result
    return WindowFunction(
        create=agg.create_accumulator,
        add=agg.add,
        merge=agg.merge,
        emit=lambda key, w, acc, o: out(key, w, agg.get_result(acc), o),
        serialize=s.serialize,
        deserialize=s.deserialize,
    )


def elements_function(value_serde: Serde[Any], emit: Callable[[Any, TimeWindow, list[Any], Callable[[Any], None]], None]
                      ) -> WindowFunction:
    """Full-window function: the element list is kept in state; ``emit(key, window, elements, out)``."""
    ser, de = list_codec(value_serde)
    return WindowFunction(create=list, add=lambda v, acc: acc + [v], merge=lambda a, b: a + b,
                          emit=emit, serialize=ser, deserialize=de)


class WindowOperator(KeyedProcessFunction):
    """Runs one windowed computation on a keyed stream (built by :class:`~kstreamlet.dsl.windowed.WindowedStream`)."""

    def __init__(self, assigner: WindowAssigner, fn: WindowFunction, trigger: Trigger,
                 allowed_lateness_ms: int, late_tag: str | None, emit_updates: bool) -> None:
        self.assigner = assigner
        self.fn = fn
        self.trigger = trigger
        self.lateness = allowed_lateness_ms if assigner.event_time else 0
        self.late_tag = late_tag
        self.emit_updates = emit_updates

    def open(self, ctx: RuntimeContext) -> None:
        self.store = ctx.raw_store("windows")

    # --- helpers ---------------------------------------------------------------------------------

    def _now(self, ctx: KeyedContext) -> int:
        return ctx.current_watermark if self.assigner.event_time else ctx.timers.current_processing_time()

    def _register(self, ctx: KeyedContext, ts: int) -> None:
        if self.assigner.event_time:
            ctx.timers.register_event_time(ts)
        else:
            ctx.timers.register_processing_time(ts)

    def _delete_timer(self, ctx: KeyedContext, ts: int) -> None:
        if self.assigner.event_time:
            ctx.timers.delete_event_time(ts)
        else:
            ctx.timers.delete_processing_time(ts)

    def _load(self, raw: bytes) -> tuple[int, Any]:
        return _CNT.unpack_from(raw)[0], self.fn.deserialize(raw[8:])

    def _save(self, key: bytes, count: int, acc: Any) -> None:
        self.store.put(key, _CNT.pack(count) + self.fn.serialize(acc))

    def _fire(self, ctx: KeyedContext, w: TimeWindow, acc: Any) -> None:
        ctx.timestamp = w.max_timestamp
        self.fn.emit(ctx.key, w, acc, ctx.emit)

    # --- elements ---------------------------------------------------------------------------------

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        ts = ctx.timestamp if self.assigner.event_time else ctx.timers.current_processing_time()
        now = self._now(ctx)
        windows = self.assigner.assign(ts)
        prefix = key_prefix(ctx.key_bytes)
        accepted = False
        for w in windows:
            if w.max_timestamp + self.lateness <= now and self.assigner.event_time:
                continue  # late for this window (it may still fit another sliding window)
            accepted = True
            if self.assigner.merging:
                w = self._merge_sessions(ctx, prefix, w, value)
                continue
            k = _win_key(prefix, w)
            raw = self.store.get(k)
            count, acc = self._load(raw) if raw is not None else (0, self.fn.create())
            acc = self.fn.add(value, acc)
            count += 1
            self._save(k, count, acc)
            if raw is None:
                self._register_window_timers(ctx, w, now)
            self._after_add(ctx, w, count, acc, now)
        if not accepted:
            metrics.LATE_RECORDS.labels("window").inc()
            _log.debug("late record dropped", operator="window", timestamp=ctx.timestamp,
                       watermark=ctx.current_watermark, side_output=self.late_tag is not None)
            if self.late_tag is not None:
                ctx.side_output(self.late_tag, value)

    def _register_window_timers(self, ctx: KeyedContext, w: TimeWindow, now: int) -> None:
        # As Flink's EventTimeTrigger: a window already past the watermark fires on the element
        # itself (in _after_add), not again from a timer.
        if self.trigger.kind != "count" and w.max_timestamp > now:
            self._register(ctx, w.max_timestamp)
        if self.lateness:
            self._register(ctx, w.max_timestamp + self.lateness)
        if self.trigger.kind == "count":
            self._register(ctx, w.max_timestamp + self.lateness)  # cleanup only
        if self.trigger.kind == "continuous":
            first = w.start - (w.start % self.trigger.interval_ms) + self.trigger.interval_ms - 1
            if first < w.max_timestamp:
                self._register(ctx, first)

    def _after_add(self, ctx: KeyedContext, w: TimeWindow, count: int, acc: Any, now: int) -> None:
        if self.trigger.kind == "count":
            if count % self.trigger.count == 0:
                self._fire(ctx, w, acc)
            return
        if w.max_timestamp <= now:
            self._fire(ctx, w, acc)  # a late element within the allowed lateness: fire again
        elif self.emit_updates:
            self._fire(ctx, w, acc)

    def _merge_sessions(self, ctx: KeyedContext, prefix: bytes, w: TimeWindow, value: Any) -> TimeWindow:
        n = len(prefix)
        merged = w
        acc = self.fn.add(value, self.fn.create())
        count = 1
        absorbed = []
        for k, raw in list(self.store.iter_prefix(prefix)):
            other = _decode_window(k, n)
            if other.intersects(merged) or other.intersects(w):
                absorbed.append((k, other))
        for k, other in absorbed:
            c, a = self._load(cast(bytes, self.store.get(k)))  # listed by the scan above
            acc = self.fn.merge(a, acc)
            count += c
            merged = merged.cover(other)
            self.store.delete(k)
            self._delete_timer(ctx, other.max_timestamp)
            if self.lateness:
                self._delete_timer(ctx, other.max_timestamp + self.lateness)
        self._save(_win_key(prefix, merged), count, acc)
        if merged.max_timestamp > self._now(ctx):
            self._register(ctx, merged.max_timestamp)
        if self.lateness:
            self._register(ctx, merged.max_timestamp + self.lateness)
        self._after_add(ctx, merged, count, acc, self._now(ctx))
        return merged

    # --- timers ---------------------------------------------------------------------------------------

    def on_timer(self, ts: int, ctx: KeyedContext) -> None:
        prefix = key_prefix(ctx.key_bytes)
        n = len(prefix)
        for k, raw in list(self.store.iter_prefix(prefix)):
            w = _decode_window(k, n)
            count, acc = self._load(raw)
            if ts == w.max_timestamp and self.trigger.kind != "count":
                self._fire(ctx, w, acc)
            elif (self.trigger.kind == "continuous" and w.start <= ts < w.max_timestamp
                  and (ts + 1) % self.trigger.interval_ms == 0):
                self._fire(ctx, w, acc)
                nxt = ts + self.trigger.interval_ms
                if nxt < w.max_timestamp:
                    self._register(ctx, nxt)
            if ts >= w.max_timestamp + self.lateness:
                self.store.delete(k)  # past the allowed lateness: the window is gone


class CountWindowOperator(KeyedProcessFunction):
    """Count windows (Flink's ``countWindow``): tumbling (``size``) or sliding (``size``, ``slide``)."""

    def __init__(self, size: int, slide: int | None, fn: Callable[[Any, list[Any], Callable[[Any], None]], None],
                 value_serde: Serde[Any]) -> None:
        if size <= 0 or (slide is not None and slide <= 0):
            raise ValueError("count window size and slide must be > 0")
        self.size = size
        self.slide = slide or size
        self.fn = fn
        self.value_serde = value_serde

    def open(self, ctx: RuntimeContext) -> None:
        self.items = ctx.get_list_state(ListStateDescriptor("elements", self.value_serde))
        self.seen = ctx.get_state(ValueStateDescriptor("seen", _serdes.INT64, default=0))

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        items = self.items.get()
        items.append(value)
        seen = self.seen.value() + 1
        if len(items) > self.size:
            items = items[-self.size:]
        fire = seen % self.slide == 0
        if fire:
            self.fn(ctx.key, list(items), ctx.emit)
        if fire and self.slide == self.size:
            items = []  # tumbling: purge
        self.items.update(items)
        self.seen.update(seen)


__all__ = ["WindowFunction", "WindowOperator", "CountWindowOperator", "reduce_function", "aggregate_function",
           "elements_function", "emit_result"]

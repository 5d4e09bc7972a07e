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
from kstreamlet.state.codec import BIAS, MAX_TIMESTAMP, MIN_TIMESTAMP, WINDOW, key_prefix, list_codec, saturating_add, window_key
from kstreamlet.state.keyed import AggregateFunction, ListStateDescriptor, ValueStateDescriptor
from kstreamlet.windowing.assigners import SlidingWindows, TimeWindow, TumblingWindows, WindowAssigner
from kstreamlet.windowing.triggers import BuiltinTrigger

_log = structlog.get_logger(__name__)

_CNT = struct.Struct(">q")
_LEN = struct.Struct(">I")
_ONE = struct.pack(">q", 1)  # the time trigger's state of a window with one element
_NO_FIRE = 2**63 - 1  # continuous trigger state: no early firing pending (Flink: empty fire-time state)
#: Window contents purged (``PurgingTrigger``): the entry keeps only its 8-byte trigger state.
_EMPTY: Any = object()
#: Buckets whose windows a window operator keeps computed (see WindowOperator.open).
_ASSIGNED_MAX = 64


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
    #: ``append(contents, value) -> contents``: add an element to the *serialized* contents without
    #: decoding them (element lists, co-groups); the window operator uses it when nothing fires.
    append: Callable[[bytes, Any], bytes] | None = None
    #: Version of the contents' byte layout, recorded with the topology (topology/record.py): a
    #: layout change bumps it, and readers keep reading the older layouts.
    layout: int = 0


WindowEmit = Callable[[Any, TimeWindow, Any, Callable[[Any], None]], None]


_pack_window = WINDOW.pack
_unpack_window = WINDOW.unpack_from


def _win_key(prefix: bytes, w: TimeWindow) -> bytes:
    """:func:`kstreamlet.state.codec.window_key` (which clamps to int64), with the in-range case inlined."""
    try:
        return prefix + _pack_window(w.start + BIAS, w.end + BIAS)
    except struct.error:
        return window_key(prefix, w.start, w.end)


def cleanup_time(w: TimeWindow, lateness: int) -> int:
    """When a window's state is dropped: ``max_timestamp + allowed_lateness``, saturated to
    ``MAX_TIMESTAMP`` (Flink's ``WindowOperator.cleanupTime``: a sum past the end of time is the end of time)."""
    return saturating_add(w.max_timestamp, lateness)


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
    one = value_serde.serialize

    def append(raw: bytes, v: Any) -> bytes:
        item = one(v)
        return raw + _LEN.pack(len(item)) + item  # encode_list appends

    return WindowFunction(create=list, add=lambda v, acc: acc + [v], merge=lambda a, b: a + b,
                          emit=emit, serialize=ser, deserialize=de, append=append)


class WindowOperator(KeyedProcessFunction):
    """Runs one windowed computation on a keyed stream (built by :class:`~kstreamlet.dsl.windowed.WindowedStream`).

    The 8-byte head of a window's state entry is the trigger's state: the element count for the
    time trigger, the count since the last firing for ``count``, the next early firing for
    ``continuous`` (:data:`_NO_FIRE` when none). Timers are per key and timestamp (shared by the
    key's windows), so :meth:`on_timer` checks every window of the key.
    """

    def __init__(self, assigner: WindowAssigner, fn: WindowFunction, trigger: BuiltinTrigger,
                 allowed_lateness_ms: int, late_tag: str | None, emit_updates: bool) -> None:
        self.assigner = assigner
        self.fn = fn
        self.trigger = trigger
        self.lateness = allowed_lateness_ms if assigner.event_time else 0
        self.late_tag = late_tag
        self.emit_updates = emit_updates
        self._kind = trigger.kind
        self._event_time = assigner.event_time
        self._purge = trigger.purge

    def open(self, ctx: RuntimeContext) -> None:
        self.store = ctx.raw_store("windows")
        # Fixed-size windows with the time trigger: a timer at ``ts`` concerns only the key's window
        # ending at ``ts + 1`` (its firing) and, with allowed lateness, the one ending at ``ts + 1 -
        # lateness`` (its cleanup), so on_timer reads those two entries instead of scanning the key's
        # windows. Every window has both timers (the firing one unless created past its end, when it
        # fired on the element; the cleanup one at exactly max_timestamp + lateness), so nothing else
        # is due at ``ts``.
        # Appending to serialized contents: the time trigger without per-element updates.
        self._append = self.fn.append if self._kind == "time" and not self.emit_updates else None
        self._empty = self.fn.serialize(self.fn.create()) if self._append is not None else b""
        a = self.assigner
        self._fixed_size = int(getattr(a, "size", 0)) if (
            self._kind == "time" and type(a) in (TumblingWindows, SlidingWindows) and not a.merging) else 0
        # The windows of an element depend only on its bucket ``ts - (ts - offset) % step`` for
        # tumbling windows (step = size) and for sliding windows whose size is a multiple of their
        # slide (step = slide; with another size the count varies within a bucket). Each bucket's
        # windows, their key suffixes and cleanup times are computed once (a few live buckets at a
        # time; the memo is cleared when it grows past _ASSIGNED_MAX).
        if type(a) is TumblingWindows:
            self._step: tuple[int, int] | None = (a.offset, a.size)
        elif type(a) is SlidingWindows and a.size % a.slide == 0:
            self._step = (a.offset, a.slide)
        else:
            self._step = None
        self._assigned: dict[int, list[tuple[TimeWindow, bytes, int, int]]] = {}

    @property
    def state_layouts(self) -> dict[str, int]:
        """Store -> layout version of what it holds, when not 0 (recorded with the topology)."""
        return {"windows": self.fn.layout} if self.fn.layout else {}

    # --- helpers ---------------------------------------------------------------------------------

    def _now(self, ctx: KeyedContext) -> int:
        return ctx.current_watermark if self._event_time else ctx.timers.current_processing_time()

    def _register(self, ctx: KeyedContext, ts: int) -> None:
        if self._event_time:
            ctx.timers.register_event_time(ts)
        else:
            ctx.timers.register_processing_time(ts)

    def _delete_timer(self, ctx: KeyedContext, ts: int) -> None:
        if self._event_time:
            ctx.timers.delete_event_time(ts)
        else:
            ctx.timers.delete_processing_time(ts)

    def _load(self, raw: bytes) -> tuple[int, Any]:
        """Trigger state and contents (a fresh accumulator when the contents were purged)."""
        return _CNT.unpack_from(raw)[0], self.fn.deserialize(raw[8:]) if len(raw) > 8 else self.fn.create()

    def _save(self, key: bytes, count: int, acc: Any) -> None:
        if acc is _EMPTY:
            self.store.put(key, _CNT.pack(count))  # purged: trigger state only, no contents
            return
        self.store.put(key, _CNT.pack(count) + self.fn.serialize(acc))

    def _fire(self, ctx: KeyedContext, w: TimeWindow, acc: Any) -> None:
        ctx.timestamp = w.max_timestamp
        self.fn.emit(ctx.key, w, acc, ctx.emit)

    def _late(self, value: Any, ctx: KeyedContext) -> None:
        metrics.LATE_RECORDS.labels("window").inc()
        _log.debug("late record dropped", operator="window", timestamp=ctx.timestamp,
                   watermark=ctx.current_watermark, side_output=self.late_tag is not None)
        if self.late_tag is not None:
            ctx.side_output(self.late_tag, value)

    def _first_fire(self, ts: int, w: TimeWindow) -> int:
        """ContinuousEventTimeTrigger's first firing, anchored on the window's first element."""
        iv = self.trigger.interval_ms
        return min(ts - ts % iv + iv, w.max_timestamp)

    # --- elements ---------------------------------------------------------------------------------

    def _windows_of(self, ts: int) -> list[tuple[TimeWindow, bytes, int, int]]:
        """``(window, key suffix, max_timestamp, cleanup time)`` of each window ``ts`` belongs to."""
        step = self._step
        if step is None:
            return [self._window_entry(w) for w in self.assigner.assign(ts)]
        bucket = ts - (ts - step[0]) % step[1]
        out = self._assigned.get(bucket)
        if out is None:
            if len(self._assigned) >= _ASSIGNED_MAX:
                self._assigned.clear()
            out = self._assigned[bucket] = [self._window_entry(w) for w in self.assigner.assign(ts)]
        return out

    def _window_entry(self, w: TimeWindow) -> tuple[TimeWindow, bytes, int, int]:
        return w, window_key(b"", w.start, w.end), w.max_timestamp, cleanup_time(w, self.lateness)

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        if self.assigner.merging:
            self._process_merging(value, ctx)
            return
        event_time = self._event_time
        ts = ctx.timestamp if event_time else ctx.timers.current_processing_time()
        now = ctx.current_watermark if event_time else ctx.timers.current_processing_time()
        prefix = key_prefix(ctx.key_bytes)
        accepted = False
        append = self._append
        for w, suffix, max_ts, cleanup in self._windows_of(ts):
            if event_time and cleanup <= now:
                continue  # late for this window (it may still fit another sliding window)
            accepted = True
            k = prefix + suffix
            raw = self.store.get(k)
            if append is not None and max_ts > now:
                # Nothing fires on this element: add it to the serialized contents as they are.
                if raw is None:
                    self.store.put(k, _ONE + append(self._empty, value))
                    self._register_window_timers(ctx, w, now)
                else:
                    base = raw[8:] if len(raw) > 8 else self._empty
                    self.store.put(k, _CNT.pack(_CNT.unpack_from(raw)[0] + 1) + append(base, value))
                continue
            count, acc = self._load(raw) if raw is not None else (0, self.fn.create())
            acc = self.fn.add(value, acc)
            if self._kind == "time":
                self._save(k, count + 1, acc)
                if raw is None:
                    self._register_window_timers(ctx, w, now)
                if max_ts <= now:
                    self._fire(ctx, w, acc)  # a late element within the allowed lateness: fire again
                    if self._purge:
                        self._save(k, count + 1, _EMPTY)  # PurgingTrigger: FIRE_AND_PURGE
                elif self.emit_updates:
                    self._fire(ctx, w, acc)
                continue
            if raw is None:
                self._register_window_timers(ctx, w, now)
                count = _NO_FIRE if self._kind == "continuous" else 0
            count, acc = self._on_element(ctx, w, count, acc, ts, now)
            self._save(k, count, acc)
        if not accepted:
            self._late(value, ctx)

    def _register_window_timers(self, ctx: KeyedContext, w: TimeWindow, now: int) -> None:
        # As Flink's EventTimeTrigger: a window already past the watermark fires on the element
        # itself, not again from a timer. The cleanup timer (Flink's registerCleanupTimer) is at
        # max_timestamp + allowed lateness (with no lateness, the firing timer is the cleanup one).
        if self._kind != "count" and w.max_timestamp > now:
            self._register(ctx, w.max_timestamp)
        if self.lateness or self._kind == "count":
            self._register(ctx, cleanup_time(w, self.lateness))

    def _on_element(self, ctx: KeyedContext, w: TimeWindow, state: int, acc: Any, ts: int, now: int
                    ) -> tuple[int, Any]:
        """Trigger.onElement for ``count`` and ``continuous`` (the element is in ``acc``); returns the
        new state and contents (:data:`_EMPTY` when a ``PurgingTrigger`` purged them)."""
        if self._kind == "count":
            state += 1
            if state >= self.trigger.count:  # CountTrigger: FIRE (contents kept) and clear the count
                self._fire(ctx, w, acc)
                return 0, _EMPTY if self._purge else acc
            return state, acc
        if w.max_timestamp <= now:
            self._fire(ctx, w, acc)  # past the window end (within the allowed lateness): fire at once
            return state, _EMPTY if self._purge else acc
        if state == _NO_FIRE:
            state = self._first_fire(ts, w)
            self._register(ctx, state)
        if self.emit_updates:
            self._fire(ctx, w, acc)
        return state, acc

    def _process_merging(self, value: Any, ctx: KeyedContext) -> None:
        """Session windows (Flink's MergingWindowSet + WindowOperator): merge first, then judge
        lateness on the merged window."""
        event_time = self._event_time
        ts = ctx.timestamp if event_time else ctx.timers.current_processing_time()
        now = self._now(ctx)
        prefix = key_prefix(ctx.key_bytes)
        n = len(prefix)
        kind = self._kind
        lateness = self.lateness
        accepted = False
        for w in self.assigner.assign_element(value, ts):
            existing = sorted((_decode_window(k, n), k, raw) for k, raw in self.store.iter_prefix(prefix))
            # MergingWindowSet.addWindow: sort by start, merge runs of intersecting windows; the
            # run holding the new window is its merged window.
            merged = w
            absorbed: list[tuple[TimeWindow, bytes, bytes]] = []
            changed = True
            while changed:
                changed = False
                for e in existing:
                    if e not in absorbed and e[0].intersects(merged):
                        absorbed.append(e)
                        merged = merged.cover(e[0])
                        changed = True
            if event_time and cleanup_time(merged, lateness) <= now:
                continue  # WindowOperator.isWindowLate(actualWindow): the merged window is late
            accepted = True
            absorbed.sort()
            # An element inside one session: no merge (MergingWindowSet calls no merge function,
            # so no trigger clear / onMerge), the session is updated in place.
            trivial = len(absorbed) == 1 and absorbed[0][0] == merged
            acc = self.fn.create()
            state = 0 if kind != "continuous" else _NO_FIRE
            for other, k, raw in absorbed:
                c, a = self._load(raw)
                acc = self.fn.merge(acc, a)
                # CountTrigger.onMerge sums the counts; ContinuousEventTimeTrigger takes the minimum.
                state = min(state, c) if kind == "continuous" else state + c
                if not trivial:
                    self.store.delete(k)
            acc = self.fn.add(value, acc)
            mk = _win_key(prefix, merged)
            # Timers of the merged window: onMerge, onElement and the cleanup timer.
            timers = set()
            if not trivial:
                if kind != "count" and merged.max_timestamp > now:
                    timers.add(merged.max_timestamp)
                timers.add(cleanup_time(merged, lateness))
                if kind == "continuous" and state != _NO_FIRE:
                    timers.add(state)  # ContinuousEventTimeTrigger.onMerge registers the earliest firing
                for t in timers:
                    self._register(ctx, t)
            if kind == "time":
                self._save(mk, state + 1, acc)
                if merged.max_timestamp <= now:
                    self._fire(ctx, merged, acc)  # EventTimeTrigger.onElement: past the end, FIRE
                    if self._purge:
                        self._save(mk, state + 1, _EMPTY)
                elif self.emit_updates:
                    self._fire(ctx, merged, acc)
            else:
                state, acc = self._on_element(ctx, merged, state, acc, ts, now)  # registers a first firing
                if kind == "continuous" and state != _NO_FIRE:
                    timers.add(state)
                self._save(mk, state, acc)
            if absorbed and not trivial:
                self._drop_timers(ctx, absorbed, [e for e in existing if e not in absorbed], timers)
        if not accepted:
            self._late(value, ctx)

    def _drop_timers(self, ctx: KeyedContext, absorbed: list[tuple[TimeWindow, bytes, bytes]],
                     kept: list[tuple[TimeWindow, bytes, bytes]], merged_timers: set[int]) -> None:
        """Delete the merged-away windows' timers (Flink's trigger clear + deleteCleanupTimer) that
        no other window of the key still needs: timers are per key and timestamp, not per window."""
        lateness = self.lateness
        continuous = self._kind == "continuous"

        def timers_of(e: tuple[TimeWindow, bytes, bytes]) -> set[int]:
            ts = {e[0].max_timestamp, cleanup_time(e[0], lateness)}
            if continuous:
                ts.add(_CNT.unpack_from(e[2])[0])
            return ts

        needed = set(merged_timers)
        for e in kept:
            needed |= timers_of(e)
        for e in absorbed:
            for t in timers_of(e) - needed:
                if t != _NO_FIRE:
                    self._delete_timer(ctx, t)

    # --- timers ---------------------------------------------------------------------------------------

    def _due_windows(self, prefix: bytes, ts: int) -> list[tuple[bytes, bytes]]:
        """The key's window entries a timer at ``ts`` may concern (see :meth:`open`)."""
        size = self._fixed_size
        if size and MIN_TIMESTAMP + size + self.lateness < ts < MAX_TIMESTAMP - 1:
            out = []
            get = self.store.get
            for end in ((ts + 1, ts + 1 - self.lateness) if self.lateness else (ts + 1,)):
                k = prefix + _pack_window(end - size + BIAS, end + BIAS)
                raw = get(k)
                if raw is not None:
                    out.append((k, raw))
            return out
        return list(self.store.iter_prefix(prefix))

    def on_timer(self, ts: int, ctx: KeyedContext) -> None:
        prefix = key_prefix(ctx.key_bytes)
        n = len(prefix)
        kind = self._kind
        for k, raw in self._due_windows(prefix, ts):
            w = _decode_window(k, n)
            mt = w.max_timestamp
            # A FIRE on purged contents emits nothing (WindowOperator: contents == null).
            has = len(raw) > 8
            if ts == mt and kind == "time":
                if has:
                    c, acc = self._load(raw)
                    self._fire(ctx, w, acc)
                    if self._purge:
                        self._save(k, c, _EMPTY)
            elif kind == "continuous" and ts <= mt:
                nxt, acc = self._load(raw)
                if ts == mt:
                    # The end timer exists only if an element came before the end (which also set
                    # the first firing); a window made after its end (within the lateness) fired on
                    # its elements, and another window's timer at this time is not its own.
                    if nxt != _NO_FIRE and has:
                        self._fire(ctx, w, acc)
                        if self._purge:
                            self._save(k, nxt, _EMPTY)
                elif nxt <= ts:  # ContinuousEventTimeTrigger.onEventTime: the fire timestamp is due
                    if has:
                        self._fire(ctx, w, acc)
                    nxt = min(ts + self.trigger.interval_ms, mt)
                    self._save(k, nxt, _EMPTY if self._purge or not has else acc)
                    self._register(ctx, nxt)
            if ts >= cleanup_time(w, self.lateness):
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
           "elements_function", "emit_result", "cleanup_time"]

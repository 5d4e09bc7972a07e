"""The general window operator: user-defined triggers, global windows and evictors (Flink's
``WindowOperator`` and ``EvictingWindowOperator``, calling the :class:`~kstreamlet.windowing.Trigger`).

Windows with a built-in trigger on time windows and no evictor run on the fast path,
:class:`kstreamlet.operators.window.WindowOperator`; :func:`window_operator` picks the operator.

State: one raw store ``windows`` of the operator, every entry under the key's
:func:`~kstreamlet.state.codec.key_prefix`, then a tag byte and the window (``start | end``, biased
as :func:`~kstreamlet.state.codec.window_key`):

- ``c | window -> contents``: the window function's accumulator, or (with an evictor) the element
  list ``encode_list([timestamp(8) | value])``; absent when empty or purged;
- ``s | window -> b""``: the key's session windows (merging assigners; Flink's ``MergingWindowSet``);
- ``t | domain(1) | time(8) | window -> flags``: the per-window timers (flags: 1 the trigger's, 2 the
  cleanup timer): the task's timer service is per key and time, so :meth:`GeneralWindowOperator.on_timer`
  calls the trigger of exactly the windows that registered that time (Flink's timer namespaces);
- ``g | window | name | ...``: the trigger's partitioned state (``ctx.get_partitioned_state``),
  laid out by :mod:`kstreamlet.state.keyed` below that prefix.

All of it is changelogged with the checkpoint, so windows, trigger state and timers are restored
after a restart and each timer fires once.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any, Iterator, cast

import structlog

from kstreamlet import metrics
from kstreamlet.api.context import KeyedContext, RuntimeContext
from kstreamlet.api.functions import KeyedProcessFunction
from kstreamlet.operators.window import WindowFunction, WindowOperator, cleanup_time
from kstreamlet.serdes import Serde
from kstreamlet.state.codec import (
    BIAS,
    MAX_TIMESTAMP,
    TIMESTAMP,
    WINDOW,
    decode_list,
    encode_list,
    key_prefix,
    saturate,
)
from kstreamlet.state.keyed import (
    AggregatingState,
    AggregatingStateDescriptor,
    KeyContext,
    ListState,
    ListStateDescriptor,
    ReducingState,
    ReducingStateDescriptor,
    StateDescriptor,
    make_state,
)
from kstreamlet.state.store import Store
from kstreamlet.windowing.assigners import GLOBAL_WINDOW, GlobalWindowAssigner, TimeWindow, WindowAssigner
from kstreamlet.windowing.evictors import Evictor, TimestampedValue
from kstreamlet.windowing.triggers import BuiltinTrigger, Trigger, TriggerResult

_log = structlog.get_logger(__name__)

_CONTENTS = b"c"
_SESSION = b"s"
_TIMER = b"t"
_STATE = b"g"
_EVENT = b"e"
_PROC = b"p"
_TRIGGER_TIMER = 1
_CLEANUP_TIMER = 2
_TS = struct.Struct(">q")
_CONTINUE = TriggerResult.CONTINUE


def _wbytes(w: TimeWindow) -> bytes:
    return WINDOW.pack(saturate(w.start) + BIAS, saturate(w.end) + BIAS)


def _tbytes(ts: int) -> bytes:
    return TIMESTAMP.pack(saturate(ts) + BIAS)


class _Namespaced:
    """A view of a store under a fixed key prefix (a key's window's trigger state): what the keyed
    state classes need of a :class:`~kstreamlet.state.store.Store`."""

    __slots__ = ("_store", "_ns")

    def __init__(self, store: Store, ns: bytes) -> None:
        self._store, self._ns = store, ns

    def get(self, key: bytes) -> bytes | None:
        return self._store.get(self._ns + key)

    def put(self, key: bytes, value: bytes) -> None:
        self._store.put(self._ns + key, value)

    def delete(self, key: bytes) -> None:
        self._store.delete(self._ns + key)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        n = len(self._ns)
        for k, v in list(self._store.iter_prefix(self._ns + prefix)):
            yield k[n:], v


class _TriggerContext:
    """The :class:`~kstreamlet.windowing.TriggerContext` (and ``OnMergeContext``) of one task's
    operator, pointed at the current key and window before each trigger call."""

    def __init__(self, op: "GeneralWindowOperator", keyctx: KeyContext) -> None:
        self._op = op
        self._keyctx = KeyContext(keyctx.clock)  # key_bytes stays b"": the namespace is the prefix
        self.ctx: KeyedContext = cast(KeyedContext, None)
        self.prefix = b""
        self.window: TimeWindow = GLOBAL_WINDOW
        self.wb = b""
        self.merged: list[TimeWindow] | None = None

    def at(self, ctx: KeyedContext, prefix: bytes, w: TimeWindow) -> "_TriggerContext":
        self.ctx, self.prefix, self.window, self.wb = ctx, prefix, w, _wbytes(w)
        return self

    # --- TriggerContext --------------------------------------------------------------------------

    @property
    def current_watermark(self) -> int:
        return self.ctx.current_watermark

    @property
    def current_processing_time(self) -> int:
        return self.ctx.timers.current_processing_time()

    def register_event_time_timer(self, time: int) -> None:
        self._op._add_timer(self, _EVENT, time, _TRIGGER_TIMER)

    def delete_event_time_timer(self, time: int) -> None:
        self._op._remove_timer(self, _EVENT, time, _TRIGGER_TIMER)

    def register_processing_time_timer(self, time: int) -> None:
        self._op._add_timer(self, _PROC, time, _TRIGGER_TIMER)

    def delete_processing_time_timer(self, time: int) -> None:
        self._op._remove_timer(self, _PROC, time, _TRIGGER_TIMER)

    def _state_of(self, wb: bytes, desc: StateDescriptor) -> Any:
        ns = self.prefix + _STATE + wb + key_prefix(desc.name.encode())
        return make_state(desc, cast(Store, _Namespaced(self._op.store, ns)), self._keyctx)

    def get_partitioned_state(self, descriptor: StateDescriptor) -> Any:
        """``descriptor``'s state for the current key and window (value, list, map, reducing or
        aggregating state, as :meth:`RuntimeContext.state`)."""
        return self._state_of(self.wb, descriptor)

    # --- OnMergeContext --------------------------------------------------------------------------

    def merge_partitioned_state(self, descriptor: StateDescriptor) -> None:
        if self.merged is None:
            raise TypeError("merge_partitioned_state is only available in Trigger.on_merge")
        target = self._state_of(self.wb, descriptor)
        for m in self.merged:
            src = self._state_of(_wbytes(m), descriptor)
            if isinstance(descriptor, ReducingStateDescriptor):
                v = cast(ReducingState[Any], src).get()
                if v is not None:
                    target.add(v)
            elif isinstance(descriptor, AggregatingStateDescriptor):
                acc = cast(AggregatingState[Any, Any], src).get_accumulator()
                if acc is not None:
                    target.merge_accumulator(acc)
            elif isinstance(descriptor, ListStateDescriptor):
                target.add_all(cast(ListState[Any], src).get())
            else:
                raise TypeError(f"{type(descriptor).__name__} {descriptor.name!r} cannot be merged: only reducing, "
                                "aggregating and list state merge (Flink's MergingState)")
            src.clear()


class GeneralWindowOperator(KeyedProcessFunction):
    """Windows whose trigger is called (Flink's ``WindowOperator``; with ``evictor``, its
    ``EvictingWindowOperator``). See the module docstring for the state layout."""

    def __init__(self, assigner: WindowAssigner, fn: WindowFunction, trigger: Trigger, allowed_lateness_ms: int,
                 late_tag: str | None, evictor: Evictor | None = None, element_serde: Serde[Any] | None = None) -> None:
        if evictor is not None and element_serde is None:
            raise ValueError("an evicting window operator needs the element serde")
        if assigner.merging and not trigger.can_merge():
            raise ValueError(f"a merging window assigner (session windows) needs a trigger that can merge: "
                             f"{type(trigger).__name__}.can_merge() is False")
        self.assigner = assigner
        self.fn = fn
        if isinstance(trigger, BuiltinTrigger) and trigger.domain is None:
            # Built-in time and continuous triggers run in the assigner's time domain; on global
            # windows ContinuousEventTimeTrigger uses event time, as in Flink.
            event = assigner.event_time or isinstance(assigner, GlobalWindowAssigner)
            trigger = replace(trigger, default_domain="event" if event else "processing")
        self.trigger = trigger
        self._event_time = assigner.event_time
        self._global = isinstance(assigner, GlobalWindowAssigner)
        self.lateness = allowed_lateness_ms if assigner.event_time else 0
        self.late_tag = late_tag
        self.evictor = evictor
        if element_serde is not None:
            self._ser_el, self._de_el = element_serde.serialize, element_serde.deserialize

    @property
    def state_layouts(self) -> dict[str, int]:
        """Store -> layout version of what it holds, when not 0 (recorded with the topology)."""
        return {"windows": self.fn.layout} if self.fn.layout else {}

    def open(self, ctx: RuntimeContext) -> None:
        self.store = ctx.raw_store("windows")
        self._tctx = _TriggerContext(self, ctx.key_context)

    # --- windows and their timers ----------------------------------------------------------------

    def _window(self, wb: bytes) -> TimeWindow:
        if self._global:
            return GLOBAL_WINDOW
        s, e = WINDOW.unpack(wb)
        return TimeWindow(s - BIAS, e - BIAS)

    def _cleanup(self, w: TimeWindow) -> int:
        """Flink's ``cleanupTime``: ``max_timestamp + allowed lateness`` (processing time: the max
        timestamp), saturated; ``MAX_TIMESTAMP`` means never (no timer)."""
        return cleanup_time(w, self.lateness) if self._event_time else w.max_timestamp

    def _add_timer(self, tc: _TriggerContext, kind: bytes, time: int, flag: int) -> None:
        time = saturate(int(time))
        k = tc.prefix + _TIMER + kind + _tbytes(time) + tc.wb
        old = self.store.get(k)
        flags = old[0] if old else 0
        if flags & flag:
            return
        self.store.put(k, bytes([flags | flag]))
        if kind == _EVENT:
            tc.ctx.timers.register_event_time(time)
        else:
            tc.ctx.timers.register_processing_time(time)

    def _remove_timer(self, tc: _TriggerContext, kind: bytes, time: int, flag: int) -> None:
        time = saturate(int(time))
        at = tc.prefix + _TIMER + kind + _tbytes(time)
        k = at + tc.wb
        old = self.store.get(k)
        if not old or not old[0] & flag:
            return
        if old[0] & ~flag:
            self.store.put(k, bytes([old[0] & ~flag]))
            return
        self.store.delete(k)
        self._release(tc.ctx, kind, time, at)

    def _release(self, ctx: KeyedContext, kind: bytes, time: int, at: bytes) -> None:
        """Delete the key's service timer at ``time`` when no window of the key needs it any more."""
        if next(iter(self.store.iter_prefix(at)), None) is None:
            if kind == _EVENT:
                ctx.timers.delete_event_time(time)
            else:
                ctx.timers.delete_processing_time(time)

    def _register_cleanup(self, tc: _TriggerContext, w: TimeWindow) -> None:
        c = self._cleanup(w)
        if c < MAX_TIMESTAMP:  # Flink: no cleanup timer for the end of time
            self._add_timer(tc, _EVENT if self._event_time else _PROC, c, _CLEANUP_TIMER)

    def _drop_window(self, tc: _TriggerContext, w: TimeWindow) -> None:
        """After the trigger's ``clear``: the window's contents, what the trigger left of its state
        and timers, and (sessions) the window itself."""
        prefix, wb, store = tc.prefix, tc.wb, self.store
        store.delete(prefix + _CONTENTS + wb)
        for k, _ in list(store.iter_prefix(prefix + _STATE + wb)):
            store.delete(k)
        n = len(prefix) + 1
        for k, _ in list(store.iter_prefix(prefix + _TIMER)):
            if k[n + 9:] == wb:
                store.delete(k)
                self._release(tc.ctx, k[n:n + 1], TIMESTAMP.unpack_from(k, n + 1)[0] - BIAS, k[:n + 9])
        if self.assigner.merging:
            store.delete(prefix + _SESSION + wb)

    def _clear_all_state(self, tc: _TriggerContext) -> None:
        """Flink's ``clearAllState``: the trigger's ``clear``, then the window's state."""
        self.trigger.clear(tc.window, tc)
        self._drop_window(tc, tc.window)

    # --- contents --------------------------------------------------------------------------------

    def _add(self, prefix: bytes, wb: bytes, value: Any, ts: int) -> None:
        k = prefix + _CONTENTS + wb
        raw = self.store.get(k)
        if self.evictor is not None:
            self.store.put(k, (raw or b"") + encode_list([_TS.pack(ts) + self._ser_el(value)]))
            return
        fn = self.fn
        self.store.put(k, fn.serialize(fn.add(value, fn.create() if raw is None else fn.deserialize(raw))))

    def _elements(self, raw: bytes) -> list[TimestampedValue]:
        de = self._de_el
        return [TimestampedValue(de(b[8:]), _TS.unpack_from(b)[0]) for b in decode_list(raw)]

    def _merge_contents(self, prefix: bytes, windows: list[TimeWindow], into: TimeWindow) -> None:
        """The merged sessions' contents into ``into``'s (in window order; purged ones add nothing)."""
        store = self.store
        parts = []
        for m in windows:
            k = prefix + _CONTENTS + _wbytes(m)
            raw = store.get(k)
            if raw is not None:
                parts.append(raw)
                store.delete(k)
        if not parts:
            return
        if self.evictor is not None:
            merged = b"".join(parts)
        else:
            fn = self.fn
            acc = fn.deserialize(parts[0])
            for raw in parts[1:]:
                acc = fn.merge(acc, fn.deserialize(raw))
            merged = fn.serialize(acc)
        store.put(prefix + _CONTENTS + _wbytes(into), merged)

    def _fire(self, tc: _TriggerContext) -> None:
        """Emit the window function's results over the window's contents (nothing when empty)."""
        k = tc.prefix + _CONTENTS + tc.wb
        raw = self.store.get(k)
        if raw is None:
            return
        ctx, w, fn = tc.ctx, tc.window, self.fn
        ts = ctx.timestamp
        if not self._global:
            ctx.timestamp = w.max_timestamp
        try:
            if self.evictor is None:
                fn.emit(ctx.key, w, fn.deserialize(raw), ctx.emit)
                return
            elements = self._elements(raw)
            self.evictor.evict_before(elements, len(elements), w, tc)
            if elements:
                acc = fn.create()
                for e in elements:
                    acc = fn.add(e.value, acc)
                fn.emit(ctx.key, w, acc, ctx.emit)
            self.evictor.evict_after(elements, len(elements), w, tc)
            if elements:
                self.store.put(k, encode_list([_TS.pack(e.timestamp) + self._ser_el(e.value) for e in elements]))
            else:
                self.store.delete(k)
        finally:
            ctx.timestamp = ts

    def _apply(self, r: TriggerResult, tc: _TriggerContext, what: str) -> None:
        if r is _CONTINUE:
            return
        if not isinstance(r, TriggerResult):
            raise TypeError(f"{type(self.trigger).__name__}.{what} must return a TriggerResult, got {r!r}")
        if r.is_fire:
            self._fire(tc)
        if r.is_purge:
            self.store.delete(tc.prefix + _CONTENTS + tc.wb)

    # --- elements --------------------------------------------------------------------------------

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        ts = ctx.timestamp
        assign_ts = ts if self._event_time else ctx.timers.current_processing_time()
        wm = ctx.current_watermark
        prefix = key_prefix(ctx.key_bytes)
        tc = self._tctx
        accepted = False
        for w in self.assigner.assign_element(value, assign_ts):
            if self.assigner.merging:
                actual = self._merge(value, w, ctx, prefix)
                if actual is None:
                    continue
                w = actual
            elif self._event_time and cleanup_time(w, self.lateness) <= wm:
                continue  # Flink's isWindowLate
            accepted = True
            tc.at(ctx, prefix, w)
            self._add(prefix, tc.wb, value, ts)
            self._apply(self.trigger.on_element(value, ts, w, tc), tc, "on_element")
            self._register_cleanup(tc, w)
        if not accepted:
            ctx.timestamp = ts
            metrics.LATE_RECORDS.labels("window").inc()
            _log.debug("late record dropped", operator="window", timestamp=ts, watermark=wm,
                       side_output=self.late_tag is not None)
            if self.late_tag is not None:
                ctx.side_output(self.late_tag, value)

    def _merge(self, value: Any, w: TimeWindow, ctx: KeyedContext, prefix: bytes) -> TimeWindow | None:
        """Flink's ``MergingWindowSet.addWindow`` with the operator's merge callback: returns the
        window ``w`` ends up in, or None when that window is late."""
        n = len(prefix) + 1
        sessions = sorted(self._window(k[n:]) for k, _ in self.store.iter_prefix(prefix + _SESSION))
        merged, absorbed = w, []
        changed = True
        while changed:
            changed = False
            for s in sessions:
                if s not in absorbed and s.intersects(merged):
                    absorbed.append(s)
                    merged = merged.cover(s)
                    changed = True
        if self._event_time and cleanup_time(merged, self.lateness) <= ctx.current_watermark:
            return None
        absorbed.sort()
        if absorbed == [merged]:
            return merged  # inside one session: no merge (Flink calls no merge function)
        tc = self._tctx
        if absorbed:
            tc.at(ctx, prefix, merged)
            tc.merged = absorbed
            try:
                self.trigger.on_merge(merged, tc)
            finally:
                tc.merged = None
            self._merge_contents(prefix, absorbed, merged)
            for m in absorbed:
                tc.at(ctx, prefix, m)
                self.trigger.clear(m, tc)
                self._drop_window(tc, m)  # also its cleanup timer (Flink's deleteCleanupTimer)
        self.store.put(prefix + _SESSION + _wbytes(merged), b"")
        return merged

    # --- timers ----------------------------------------------------------------------------------

    def on_timer(self, ts: int, ctx: KeyedContext) -> None:
        event = ctx.time_domain == "event"
        kind = _EVENT if event else _PROC
        prefix = key_prefix(ctx.key_bytes)
        at = prefix + _TIMER + kind + _tbytes(ts)
        n = len(at)
        tc = self._tctx
        cleanup_domain = event == self._event_time
        for k, _ in list(self.store.iter_prefix(at)):
            # One window's timer at a time, as Flink's timer queue: a timer an earlier window's
            # trigger deleted meanwhile does not fire; one registered again for this time (after its
            # deletion here) is a new timer, and fires in this same round.
            if self.store.get(k) is None:
                continue
            self.store.delete(k)
            w = self._window(k[n:])
            tc.at(ctx, prefix, w)
            if event:
                self._apply(self.trigger.on_event_time(ts, w, tc), tc, "on_event_time")
            else:
                self._apply(self.trigger.on_processing_time(ts, w, tc), tc, "on_processing_time")
            if cleanup_domain and ts == self._cleanup(w):
                tc.at(ctx, prefix, w)
                self._clear_all_state(tc)


def window_operator(assigner: WindowAssigner, fn: WindowFunction, trigger: Trigger | None, allowed_lateness_ms: int,
                    late_tag: str | None, emit_updates: bool = False, evictor: Evictor | None = None,
                    element_serde: Serde[Any] | None = None) -> KeyedProcessFunction:
    """The operator for a window: the fast path (:class:`WindowOperator`) for built-in triggers on
    time windows without an evictor, else :class:`GeneralWindowOperator`. ``trigger`` None is the
    assigner's default (the time trigger; :class:`~kstreamlet.windowing.NeverTrigger` for global windows)."""
    from kstreamlet.windowing.triggers import NeverTrigger

    is_global = isinstance(assigner, GlobalWindowAssigner)
    if trigger is None:
        trigger = NeverTrigger() if is_global else BuiltinTrigger()
    if isinstance(trigger, BuiltinTrigger) and evictor is None and not is_global:
        return WindowOperator(assigner, fn, trigger, allowed_lateness_ms, late_tag, emit_updates)
    if emit_updates:
        raise ValueError("emit_updates() works with the built-in triggers on time windows without an evictor; "
                         "with a user-defined trigger, global windows or an evictor the trigger decides what is emitted")
    return GeneralWindowOperator(assigner, fn, trigger, allowed_lateness_ms, late_tag, evictor, element_serde)


__all__ = ["GeneralWindowOperator", "window_operator"]

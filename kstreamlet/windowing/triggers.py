"""Window triggers: when a window emits (Flink's ``Trigger``), used by ``WindowedStream.trigger``.

Two kinds coexist:

- :class:`Trigger` is the base class of user-defined triggers (Flink's ``Trigger``): subclass it
  and return a :class:`TriggerResult` from ``on_element`` / ``on_event_time`` /
  ``on_processing_time``; ``ctx`` (a :class:`TriggerContext`) registers per-window timers and
  gives per-key, per-window state. Windows with such a trigger run in the general window operator
  (:mod:`kstreamlet.operators.window_general`).
- :class:`BuiltinTrigger` values (``CountTrigger.of(n)``, ``ContinuousEventTimeTrigger.of(ms)``,
  ``ContinuousProcessingTimeTrigger.of(ms)``, ``EventTimeTrigger.create()``,
  ``ProcessingTimeTrigger.create()``, ``PurgingTrigger.of(t)``) are :class:`Trigger` subclasses
  too, with Flink's semantics in those methods; on time windows without an evictor they run on the
  window operator's fast path (:class:`kstreamlet.operators.window.WindowOperator`), which keeps
  their state in the window entry's head instead of calling them.

Example (fire every third element of a window, then purge it)::

    class EveryThird(Trigger):
        COUNT = ReducingStateDescriptor("n", reduce_fn=operator.add, serde=serdes.INT64)

        def on_element(self, element, timestamp, window, ctx):
            n = ctx.get_partitioned_state(self.COUNT)
            n.add(1)
            if n.get() >= 3:
                n.clear()
                return TriggerResult.FIRE_AND_PURGE
            return TriggerResult.CONTINUE

        def clear(self, window, ctx):
            ctx.get_partitioned_state(self.COUNT).clear()

    keyed.window(TumblingEventTimeWindows.of(1000)).trigger(EveryThird()).count()
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from kstreamlet import serdes as _serdes
from kstreamlet.eventtime import Duration, to_millis
from kstreamlet.state.keyed import ReducingStateDescriptor, StateDescriptor

if TYPE_CHECKING:
    from kstreamlet.windowing.assigners import TimeWindow


class TriggerResult(enum.Enum):
    """What a trigger method decides (Flink's ``TriggerResult``)."""

    CONTINUE = (False, False)
    FIRE = (True, False)
    PURGE = (False, True)
    FIRE_AND_PURGE = (True, True)

    @property
    def is_fire(self) -> bool:
        """The window function runs over the window's contents (nothing when they are empty)."""
        return self.value[0]

    @property
    def is_purge(self) -> bool:
        """The window's contents are cleared (its trigger state and timers are kept)."""
        return self.value[1]


class TriggerContext(Protocol):
    """``ctx`` of a :class:`Trigger`'s methods (Flink's ``Trigger.TriggerContext``): scoped to the
    current key and window. Timers registered here call the trigger back for this window only;
    state from :meth:`get_partitioned_state` is this key's and window's."""

    @property
    def current_watermark(self) -> int: ...
    @property
    def current_processing_time(self) -> int: ...
    def register_event_time_timer(self, time: int) -> None: ...
    def delete_event_time_timer(self, time: int) -> None: ...
    def register_processing_time_timer(self, time: int) -> None: ...
    def delete_processing_time_timer(self, time: int) -> None: ...
    def get_partitioned_state(self, descriptor: StateDescriptor) -> Any: ...


class OnMergeContext(TriggerContext, Protocol):
    """``ctx`` of :meth:`Trigger.on_merge` (Flink's ``OnMergeContext``)."""

    def merge_partitioned_state(self, descriptor: StateDescriptor) -> None:
        """Merge this state of the windows being merged into the merged window's (reducing,
        aggregating and list state; the merged-away windows' state is cleared)."""
        ...


class Trigger:
    """Base class of window triggers (Flink's ``Trigger``). Override what you need; each of
    ``on_element`` / ``on_event_time`` / ``on_processing_time`` returns a :class:`TriggerResult`.

    - ``on_element(element, timestamp, window, ctx)``: for each element added to ``window``.
    - ``on_event_time(time, window, ctx)`` / ``on_processing_time(time, window, ctx)``: a timer
      this trigger registered for ``window`` (or the window's cleanup timer) is due.
    - ``can_merge()`` / ``on_merge(window, ctx)``: session windows merged into ``window``; merge
      the state of the merged windows (``ctx.merge_partitioned_state``) and register the timers
      ``window`` needs. A trigger used with a merging assigner must return True from ``can_merge``.
    - ``clear(window, ctx)``: the window is dropped (cleanup at ``max_timestamp + allowed
      lateness``, or merged away): delete its timers and state.
    """

    def on_element(self, element: Any, timestamp: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return False

    def on_merge(self, window: "TimeWindow", ctx: OnMergeContext) -> None:
        raise TypeError(f"trigger {type(self).__name__} does not support merging (can_merge() is False)")

    def clear(self, window: "TimeWindow", ctx: TriggerContext) -> None:
        return None


_COUNT = ReducingStateDescriptor("count", reduce_fn=operator.add, serde=_serdes.INT64)
_FIRE_AT = ReducingStateDescriptor("fire-time", reduce_fn=min, serde=_serdes.INT64)


@dataclass(frozen=True)
class BuiltinTrigger(Trigger):
    """A built-in trigger as a value (what ``CountTrigger.of`` & co. return).

    ``kind``: ``time`` (default: at the window's end), ``count`` (Flink's ``CountTrigger``: fires
    when ``count`` elements arrived since the last firing, instead of time; the contents are
    kept, the count is cleared; merged windows add their counts), ``continuous`` (Flink's
    ``ContinuousEventTimeTrigger``: at the end, and early every ``interval_ms`` from the first
    element, ``ts - ts % interval + interval``; merged windows take the earliest next firing).

    The methods of :class:`Trigger` implement the same (Flink's) semantics for the general window
    operator (global windows, evictors); ``time`` and ``continuous`` without a ``domain`` use the
    window assigner's time domain (event time for global windows' ``continuous``).
    """

    kind: str = "time"
    count: int = 0
    interval_ms: int = 0
    #: ``PurgingTrigger``: every FIRE becomes FIRE_AND_PURGE (the contents are cleared after it).
    purge: bool = False
    #: ``"event"`` / ``"processing"`` for ``EventTimeTrigger`` / ``ProcessingTimeTrigger`` /
    #: ``ContinuousProcessingTimeTrigger``: the window assigner must be of that time domain (or
    #: global windows); ``None``: the assigner's.
    domain: str | None = None
    #: The time domain the general operator runs ``time``/``continuous`` in when ``domain`` is None
    #: (set by the operator from its assigner).
    default_domain: str = "event"

    def __post_init__(self) -> None:
        if self.domain not in (None, "event", "processing"):
            raise ValueError(f"trigger domain must be 'event' or 'processing', got {self.domain!r}")
        if self.kind not in ("time", "count", "continuous"):
            raise ValueError(f"trigger kind must be 'time', 'count' or 'continuous', got {self.kind!r}")
        if self.kind == "count" and self.count <= 0:
            raise ValueError(f"count trigger count must be > 0, got {self.count}")
        if self.kind == "continuous" and self.interval_ms <= 0:
            raise ValueError(f"continuous trigger interval must be > 0 ms, got {self.interval_ms}")

    # --- Flink's semantics, for the general window operator -----------------------------------------

    @property
    def _event(self) -> bool:
        return (self.domain or self.default_domain) == "event"

    def _result(self, fire: bool) -> TriggerResult:
        if not fire:
            return TriggerResult.CONTINUE
        return TriggerResult.FIRE_AND_PURGE if self.purge else TriggerResult.FIRE

    def _register(self, ctx: TriggerContext, t: int) -> None:
        if self._event:
            ctx.register_event_time_timer(t)
        else:
            ctx.register_processing_time_timer(t)

    def _next_fire(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> None:
        state = ctx.get_partitioned_state(_FIRE_AT)
        nxt = min(time + self.interval_ms, window.max_timestamp)
        state.add(nxt)
        self._register(ctx, nxt)

    def on_element(self, element: Any, timestamp: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        if self.kind == "count":
            count = ctx.get_partitioned_state(_COUNT)
            count.add(1)
            if count.get() >= self.count:
                count.clear()
                return self._result(True)
            return TriggerResult.CONTINUE
        if self.kind == "time":
            if self._event:
                if window.max_timestamp <= ctx.current_watermark:
                    return self._result(True)  # the watermark is past the window: fire at once
                ctx.register_event_time_timer(window.max_timestamp)
            else:
                ctx.register_processing_time_timer(window.max_timestamp)
            return TriggerResult.CONTINUE
        if self._event:  # ContinuousEventTimeTrigger
            if window.max_timestamp <= ctx.current_watermark:
                return self._result(True)
            ctx.register_event_time_timer(window.max_timestamp)
            anchor = timestamp
        else:  # ContinuousProcessingTimeTrigger: anchored on the processing time
            anchor = ctx.current_processing_time
        if ctx.get_partitioned_state(_FIRE_AT).get() is None:
            self._next_fire(anchor - anchor % self.interval_ms, window, ctx)
        return TriggerResult.CONTINUE

    def _on_time(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        if self.kind == "count":
            return TriggerResult.CONTINUE
        if self.kind == "time":
            return self._result(time == window.max_timestamp if self._event else True)
        if self._event and time == window.max_timestamp:
            return self._result(True)
        state = ctx.get_partitioned_state(_FIRE_AT)
        if state.get() == time:
            state.clear()
            self._next_fire(time, window, ctx)
            return self._result(True)
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return self._on_time(time, window, ctx) if self._event or self.kind == "count" else TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE if self._event else self._on_time(time, window, ctx)

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: "TimeWindow", ctx: OnMergeContext) -> None:
        if self.kind == "count":
            ctx.merge_partitioned_state(_COUNT)
        elif self.kind == "time":
            now = ctx.current_watermark if self._event else ctx.current_processing_time
            if window.max_timestamp > now:
                self._register(ctx, window.max_timestamp)
        else:
            ctx.merge_partitioned_state(_FIRE_AT)
            nxt = ctx.get_partitioned_state(_FIRE_AT).get()
            if nxt is not None:
                self._register(ctx, nxt)

    def clear(self, window: "TimeWindow", ctx: TriggerContext) -> None:
        if self.kind == "count":
            ctx.get_partitioned_state(_COUNT).clear()
            return
        if self.kind == "time":
            if self._event:
                ctx.delete_event_time_timer(window.max_timestamp)
            else:
                ctx.delete_processing_time_timer(window.max_timestamp)
            return
        state = ctx.get_partitioned_state(_FIRE_AT)
        nxt = state.get()
        if nxt is not None:
            if self._event:
                ctx.delete_event_time_timer(nxt)
            else:
                ctx.delete_processing_time_timer(nxt)
        state.clear()


class CountTrigger:
    @staticmethod
    def of(n: int) -> BuiltinTrigger:
        if n <= 0:
            raise ValueError("count must be > 0")
        return BuiltinTrigger("count", count=n)


def _interval(interval_ms: Duration) -> int:
    iv = to_millis(interval_ms, "continuous trigger interval")
    if iv <= 0:
        raise ValueError(f"continuous trigger interval must be > 0 ms, got {iv}")
    return iv


class ContinuousEventTimeTrigger:
    """Early firings every ``interval_ms`` of event time, plus the final one."""

    @staticmethod
    def of(interval_ms: Duration) -> BuiltinTrigger:
        """``interval_ms``: milliseconds or a ``datetime.timedelta``."""
        return BuiltinTrigger("continuous", interval_ms=_interval(interval_ms))


class ContinuousProcessingTimeTrigger:
    """Firings every ``interval_ms`` of processing time (Flink's ``ContinuousProcessingTimeTrigger``),
    anchored on the processing time of the window's first element; for processing-time windows and
    global windows."""

    @staticmethod
    def of(interval_ms: Duration) -> BuiltinTrigger:
        return BuiltinTrigger("continuous", interval_ms=_interval(interval_ms), domain="processing")


class EventTimeTrigger:
    """Fires a window once the watermark passes its end, and on each element within the allowed
    lateness after that (Flink's ``EventTimeTrigger``, the default of event-time windows)."""

    @staticmethod
    def create() -> BuiltinTrigger:
        return BuiltinTrigger("time", domain="event")


class ProcessingTimeTrigger:
    """Fires a window once the processing time passes its end (Flink's ``ProcessingTimeTrigger``,
    the default of processing-time windows)."""

    @staticmethod
    def create() -> BuiltinTrigger:
        return BuiltinTrigger("time", domain="processing")


class NeverTrigger(Trigger):
    """Never fires (Flink's ``GlobalWindows.NeverTrigger``, the default trigger of global windows)."""

    @staticmethod
    def create() -> "NeverTrigger":
        return NeverTrigger()

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: "TimeWindow", ctx: OnMergeContext) -> None:
        return None

    def __eq__(self, other: object) -> bool:
        return type(other) is NeverTrigger

    def __hash__(self) -> int:
        return hash(NeverTrigger)


class PurgingTrigger(Trigger):
    """``PurgingTrigger.of(trigger)``: ``trigger``'s firings also purge the window contents (Flink's
    FIRE_AND_PURGE); the trigger's own state and timers are kept, the window stays until cleanup.

    Of a built-in trigger it returns that trigger with ``purge=True`` (the fast path); of a
    user-defined one, a ``PurgingTrigger`` wrapping it."""

    def __init__(self, nested: Trigger) -> None:
        if not isinstance(nested, Trigger):
            raise TypeError(f"PurgingTrigger.of takes a Trigger, not {type(nested).__name__}")
        self.nested = nested

    @staticmethod
    def of(trigger: Trigger) -> Trigger:
        if isinstance(trigger, BuiltinTrigger):
            return replace(trigger, purge=True)
        if not isinstance(trigger, Trigger):
            raise TypeError(f"PurgingTrigger.of takes a Trigger, not {type(trigger).__name__}")
        return PurgingTrigger(trigger)

    @staticmethod
    def _purging(r: TriggerResult) -> TriggerResult:
        return TriggerResult.FIRE_AND_PURGE if r.is_fire else r

    def on_element(self, element: Any, timestamp: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return self._purging(self.nested.on_element(element, timestamp, window, ctx))

    def on_event_time(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return self._purging(self.nested.on_event_time(time, window, ctx))

    def on_processing_time(self, time: int, window: "TimeWindow", ctx: TriggerContext) -> TriggerResult:
        return self._purging(self.nested.on_processing_time(time, window, ctx))

    def can_merge(self) -> bool:
        return self.nested.can_merge()

    def on_merge(self, window: "TimeWindow", ctx: OnMergeContext) -> None:
        self.nested.on_merge(window, ctx)

    def clear(self, window: "TimeWindow", ctx: TriggerContext) -> None:
        self.nested.clear(window, ctx)


__all__ = ["Trigger", "TriggerResult", "TriggerContext", "OnMergeContext", "BuiltinTrigger", "CountTrigger",
           "ContinuousEventTimeTrigger", "ContinuousProcessingTimeTrigger", "EventTimeTrigger",
           "ProcessingTimeTrigger", "NeverTrigger", "PurgingTrigger"]

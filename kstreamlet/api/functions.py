"""User functions: keyed functions with state and timers (Flink's ``KeyedProcessFunction``), and the
functions of a connected broadcast stream.

Example — alert when a sensor's temperature rises for 1 s::

    class RisingAlert(KeyedProcessFunction):
        def open(self, ctx):
            self.last = ctx.get_state(ValueStateDescriptor("last-temp", serdes.JSON))
            self.timer = ctx.get_state(ValueStateDescriptor("timer", serdes.INT64))

        def process_element(self, reading, ctx):
            prev, self_timer = self.last.value(), self.timer.value()
            self.last.update(reading["temperature"])
            if prev is not None and reading["temperature"] > prev and self_timer is None:
                t = ctx.timers.current_processing_time() + 1000
                ctx.timers.register_processing_time(t)
                self.timer.update(t)
            elif prev is not None and reading["temperature"] <= prev and self_timer is not None:
                ctx.timers.delete_processing_time(self_timer)
                self.timer.clear()

        def on_timer(self, ts, ctx):
            ctx.emit(f"sensor {ctx.key} rose for 1s")
            self.timer.clear()

    readings.key_by(lambda r: r["id"], key_serde=serdes.STR).process(RisingAlert())

Each task (partition) gets its own copy of the function object, and ``open`` is called
on that copy, so attributes set in ``open`` are per task.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from kstreamlet.api.context import BroadcastState, KeyedContext, ProcessorContext, RuntimeContext
from kstreamlet.state.keyed import StateDescriptor


class BroadcastContext(Protocol):
    """``ctx`` of ``process_broadcast_element``: the writable broadcast state, the element's key and
    timestamp, ``emit``, and (keyed) ``apply_to_keyed_state(descriptor, fn(key, state))``."""

    broadcast_state: BroadcastState
    key: Any
    timestamp: int

    def emit(self, value: Any, key: Any = None, timestamp: int | None = None) -> None: ...
    def apply_to_keyed_state(self, desc: StateDescriptor, fn: Callable[[Any, Any], None]) -> None: ...


class KeyedProcessFunction:
    """Override ``process_element`` (required), ``open``, ``on_timer``, ``close``.

    Watermarks are tracked for functions that override ``on_timer``; a function without timers
    that reads ``ctx.current_watermark`` / ``ctx.is_late`` sets the class attribute
    ``uses_event_time = True``.
    """

    def open(self, ctx: RuntimeContext) -> None:
        """Declare state here (called once per task, on the task's copy)."""

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element(value, ctx)")

    def on_timer(self, timestamp: int, ctx: KeyedContext) -> None:
        """A timer registered for ``ctx.key`` fired (``ctx.time_domain`` says which kind)."""

    def close(self) -> None:
        """The task is closing (revoked or shutdown)."""


class CoProcessFunction:
    """Two connected (non-keyed) streams, one function: ``a.connect(b).process(fn)`` calls
    ``process_element1`` for ``a``'s records and ``process_element2`` for ``b``'s (Flink's
    ``CoProcessFunction``). Both see a :class:`ProcessorContext` (``emit``, ``side_output``,
    the record's key, timestamp and source). No state or timers — connect keyed streams for
    those (:class:`KeyedCoProcessFunction`) — and one instance serves every task of a member,
    so keep no per-partition attributes on it."""

    def process_element1(self, value: Any, ctx: ProcessorContext) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element1(value, ctx)")

    def process_element2(self, value: Any, ctx: ProcessorContext) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element2(value, ctx)")


class KeyedCoProcessFunction(KeyedProcessFunction):
    """Two connected keyed streams, one function with keyed state and timers shared by both
    inputs (Flink's ``KeyedCoProcessFunction``; the seed's "connect" example, e.g. matching
    orders with payments per order id): ``a.key_by(k).connect(b.key_by(k)).process(fn)``.

    Override ``process_element1`` (``a``'s records), ``process_element2`` (``b``'s), and
    optionally ``open`` (declare state), ``on_timer`` and ``close``. The state a function
    declares in ``open`` is one per key, whichever input the record came from; the watermark
    is the minimum of both inputs'. Both inputs must be partitioned alike (``key_by`` on both
    sides does that)."""

    def process_element1(self, value: Any, ctx: KeyedContext) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element1(value, ctx)")

    def process_element2(self, value: Any, ctx: KeyedContext) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element2(value, ctx)")

    def process_element(self, value: Any, ctx: KeyedContext) -> None:  # pragma: no cover - dispatched per side
        raise TypeError("a KeyedCoProcessFunction receives process_element1/process_element2 calls")


class BroadcastProcessFunction:
    """Non-keyed: override ``process_element`` and ``process_broadcast_element``."""

    def open(self, ctx: RuntimeContext) -> None:
        """Called once per task copy."""

    def process_element(self, value: Any, ctx: ProcessorContext) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element(value, ctx)")

    def process_broadcast_element(self, value: Any, ctx: "BroadcastContext") -> None:
        raise TypeError(f"{type(self).__name__} must implement process_broadcast_element(value, ctx)")


class KeyedBroadcastProcessFunction(KeyedProcessFunction):
    """Keyed: keyed state and timers as in KeyedProcessFunction, plus the broadcast side."""

    def process_broadcast_element(self, value: Any, ctx: "BroadcastContext") -> None:
        raise TypeError(f"{type(self).__name__} must implement process_broadcast_element(value, ctx)")


__all__ = ["KeyedProcessFunction", "CoProcessFunction", "KeyedCoProcessFunction", "BroadcastProcessFunction",
           "KeyedBroadcastProcessFunction", "BroadcastContext"]

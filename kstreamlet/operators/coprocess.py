"""Connected streams: one function over two inputs (Flink's ``CoProcessFunction`` and
``KeyedCoProcessFunction``).

The DSL (``dsl/connected.py``) tags each input's records with its side (``(LEFT, value)`` /
``(RIGHT, value)``, in memory, after deserialization, as for joins) and merges them; the operators here send
each record to ``process_element1`` or ``process_element2``. In the keyed case the user
function runs inside a keyed process node, so its state (declared in ``open``) and timers
are per key and shared by both inputs, and timers fire through ``on_timer``.
"""

from __future__ import annotations

from typing import Any

from kstreamlet.api.context import KeyedContext, ProcessorContext, RuntimeContext
from kstreamlet.api.functions import CoProcessFunction, KeyedCoProcessFunction, KeyedProcessFunction
from kstreamlet.operators.joins import LEFT


def co_process(fn: CoProcessFunction) -> Any:
    """``fn(tagged_value, ctx)`` for a process node: dispatches to ``fn``'s two methods."""
    e1, e2 = fn.process_element1, fn.process_element2

    def process(tagged: tuple[int, Any], ctx: ProcessorContext) -> None:
        side, value = tagged
        if side == LEFT:
            e1(value, ctx)
        else:
            e2(value, ctx)

    return process


class KeyedCoProcessOperator(KeyedProcessFunction):
    """Runs a :class:`KeyedCoProcessFunction` (a copy per task, as every keyed function)."""

    def __init__(self, fn: KeyedCoProcessFunction) -> None:
        self.fn = fn
        # Watermarks are tracked when the function can use them: it has timers (the node sees
        # the timer variant's on_timer) or declares ``uses_event_time`` (passed on here).
        declared = getattr(fn, "uses_event_time", None)
        if declared is not None:
            self.uses_event_time = bool(declared)

    def open(self, ctx: RuntimeContext) -> None:
        import copy

        self.fn = copy.copy(self.fn)  # the node copies this operator per task, not the function inside
        self.fn.open(ctx)
        self._e1, self._e2 = self.fn.process_element1, self.fn.process_element2

    def process_element(self, tagged: tuple[int, Any], ctx: KeyedContext) -> None:
        side, value = tagged
        if side == LEFT:
            self._e1(value, ctx)
        else:
            self._e2(value, ctx)

    def close(self) -> None:
        self.fn.close()


class KeyedCoProcessTimerOperator(KeyedCoProcessOperator):
    """The same, for a function with timers (``on_timer`` overridden)."""

    def on_timer(self, timestamp: int, ctx: KeyedContext) -> None:
        self.fn.on_timer(timestamp, ctx)


def keyed_co_process(fn: KeyedCoProcessFunction) -> KeyedCoProcessOperator:
    if type(fn).on_timer is not KeyedProcessFunction.on_timer:
        return KeyedCoProcessTimerOperator(fn)
    return KeyedCoProcessOperator(fn)

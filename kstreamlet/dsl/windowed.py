"""Windowed streams: ``keyed.window(assigner)`` and ``keyed.count_window(size, slide)``.

Example (per-sensor max temperature every 5 s of event time)::

    (readings.key_by(lambda r: r["id"], key_serde=serdes.STR)
        .window(TumblingEventTimeWindows.of(5000))
        .allowed_lateness(1000)
        .side_output_late_data("late")
        .max("temperature")
        .to("max-temperature"))

Outputs carry the key and, as timestamp, the window's ``max_timestamp``. Full-window
``process(fn)`` calls ``fn(key, window, elements, out)``; ``aggregate(agg, window_fn=f)``
combines incremental aggregation with ``f(key, window, result, out)``. ``.trigger(t)`` takes a
built-in trigger or a user-defined :class:`~kstreamlet.windowing.Trigger`; ``.evictor(e)`` an
:class:`~kstreamlet.windowing.Evictor`; ``window(GlobalWindows.create())`` needs a trigger that
fires. How a window runs: :mod:`kstreamlet.operators.window` (built-in triggers on time windows)
and :mod:`kstreamlet.operators.window_general` (the rest).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Generic

from kstreamlet import serdes as _serdes
from kstreamlet.dsl.handle import Handle, S
from kstreamlet.eventtime import Duration, to_millis
from kstreamlet.operators.aggregate import Count, Max, Min, Sum, extractor
from kstreamlet.operators.window import (
    WindowFunction,
    aggregate_function,
    elements_function,
    reduce_function,
)
from kstreamlet.operators.window_general import window_operator
from kstreamlet.serdes import Serde
from kstreamlet.state.keyed import AggregateFunction
from kstreamlet.topology.nodes import KeyedProcessNode
from kstreamlet.windowing.assigners import GlobalWindowAssigner, TimeWindow, WindowAssigner
from kstreamlet.windowing.evictors import Evictor
from kstreamlet.windowing.triggers import BuiltinTrigger, Trigger


class WindowedStream(Generic[S]):
    """Configure a window, then finish with a window function."""

    def __init__(self, keyed: Handle[S], assigner: WindowAssigner) -> None:
        self._keyed = keyed
        self._assigner = assigner
        self._trigger: Trigger | None = None  # the assigner's default
        self._evictor: Evictor | None = None
        self._lateness = 0
        self._late_tag: str | None = None
        self._emit_updates = False
        self._with_window = False

    def trigger(self, trigger: Trigger) -> "WindowedStream[S]":
        """Replace the assigner's default trigger: a built-in one (``CountTrigger.of(n)``,
        ``ContinuousEventTimeTrigger.of(ms)``, ``ContinuousProcessingTimeTrigger.of(ms)``,
        ``EventTimeTrigger.create()``, ``ProcessingTimeTrigger.create()``, ``PurgingTrigger.of(t)``)
        or a user-defined :class:`~kstreamlet.windowing.Trigger` subclass instance."""
        check_trigger(trigger, self._assigner)
        self._trigger = trigger
        return self

    def evictor(self, evictor: Evictor) -> "WindowedStream[S]":
        """Evict elements before and/or after the window function (``CountEvictor.of(n)``,
        ``TimeEvictor.of(ms)``, ``DeltaEvictor.of(threshold, fn)`` or an
        :class:`~kstreamlet.windowing.Evictor` subclass instance). The window then keeps all its
        elements, and the window function runs over what is left at each firing (Flink's
        ``EvictingWindowOperator``)."""
        if not isinstance(evictor, Evictor):
            raise TypeError(f"evictor must be a kstreamlet.windowing Evictor, not {type(evictor).__name__}")
        self._evictor = evictor
        return self

    def allowed_lateness(self, ms: Duration) -> "WindowedStream[S]":
        """Keep window state ``ms`` (milliseconds or a ``datetime.timedelta``) past the window end;
        late elements in that time re-fire it."""
        n = to_millis(ms, "allowed lateness")
        if n < 0:
            raise ValueError(f"allowed lateness must be >= 0 ms, got {n}")
        self._lateness = n
        return self

    def side_output_late_data(self, tag: str) -> "WindowedStream[S]":
        """Elements too late for every window go to ``.side_output(tag)`` of the result stream."""
        self._late_tag = tag
        return self

    def emit_updates(self) -> "WindowedStream[S]":
        """Emit the updated result on every element (Kafka Streams style), not only when the window fires."""
        self._emit_updates = True
        return self

    def with_window(self) -> "WindowedStream[S]":
        """Emit each result with its window (Kafka Streams' ``Windowed<K>``): the value becomes
        ``{"start": window.start, "end": window.end, "key": key, "value": result}`` (JSON; the key
        must be JSON-serializable), the record key and timestamp are unchanged."""
        self._with_window = True
        return self

    def _build(self, fn: WindowFunction, out_serde: Serde[Any], name: str | None, op: str) -> S:
        if self._with_window:
            fn = _windowed_results(fn)
            out_serde = _serdes.JSON
        operator = window_operator(self._assigner, fn, self._trigger, self._lateness, self._late_tag,
                                   self._emit_updates, self._evictor, self._keyed.value_serde)
        keyed = self._keyed
        node = KeyedProcessNode(operator, keyed.key_serde, name or keyed._builder.generated_name(f"window-{op}"))
        return keyed._then(node, value_serde=out_serde)

    def reduce(self, fn: Callable[[Any, Any], Any], serde: Serde[Any] | None = None, name: str | None = None,
               window_fn: Callable[[Any, TimeWindow, Any, Callable[[Any], None]], None] | None = None) -> S:
        """Incremental ``fn(acc, value)``; emits the reduced value (or ``window_fn``'s outputs)."""
        vs = serde or self._keyed.value_serde
        return self._build(reduce_function(fn, vs, window_fn), vs, name, "reduce")

    def aggregate(self, agg: AggregateFunction[Any, Any, Any], accumulator_serde: Serde[Any] | None = None,
                  output_serde: Serde[Any] | None = None, name: str | None = None,
                  window_fn: Callable[[Any, TimeWindow, Any, Callable[[Any], None]], None] | None = None) -> S:
        """Incremental :class:`~kstreamlet.state.keyed.AggregateFunction`; emits ``get_result``
        (or, with ``window_fn``, whatever ``window_fn(key, window, result, out)`` emits)."""
        wf = aggregate_function(agg, accumulator_serde, window_fn)
        return self._build(wf, output_serde or _serdes.JSON, name, "aggregate")

    def process(self, fn: Callable[[Any, TimeWindow, list[Any], Callable[[Any], None]], None],
                output_serde: Serde[Any] | None = None, name: str | None = None) -> S:
        """Full-window function ``fn(key, window, elements, out)`` (elements kept in state)."""
        wf = elements_function(self._keyed.value_serde, fn)
        return self._build(wf, output_serde or _serdes.JSON, name, "process")

    def apply(self, fn: Callable[[Any, TimeWindow, list[Any]], Any], output_serde: Serde[Any] | None = None,
              name: str | None = None) -> S:
        """Like ``process`` but ``fn(key, window, elements)`` returns one output (None: nothing)."""
        def emit(key: Any, w: TimeWindow, items: list[Any], out: Callable[[Any], None]) -> None:
            r = fn(key, w, items)
            if r is not None:
                out(r)

        return self.process(emit, output_serde, name)

    def count(self, name: str | None = None) -> S:
        return self.aggregate(Count(), output_serde=_serdes.INT64, name=name)

    def sum(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None) -> S:
        return self.aggregate(Sum(extractor(field)), name=name)

    def min(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None) -> S:
        return self.aggregate(Min(extractor(field)), name=name)

    def max(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None) -> S:
        return self.aggregate(Max(extractor(field)), name=name)


def check_trigger(trigger: Any, assigner: WindowAssigner) -> None:
    """What ``.trigger(t)`` accepts for ``assigner`` (TypeError / ValueError otherwise)."""
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a kstreamlet.windowing Trigger, not {type(trigger).__name__}")
    if (isinstance(trigger, BuiltinTrigger) and trigger.domain is not None
            and not isinstance(assigner, GlobalWindowAssigner) and (trigger.domain == "event") != assigner.event_time):
        window = "event-time" if assigner.event_time else "processing-time"
        raise ValueError(f"a {trigger.domain}-time trigger cannot fire {window} windows "
                         f"(use {'EventTimeTrigger' if assigner.event_time else 'ProcessingTimeTrigger'})")
    if assigner.merging and not trigger.can_merge():
        # As Flink's WindowedStream.trigger: UnsupportedOperationException.
        raise ValueError(f"a merging window assigner (session windows) needs a trigger that can merge: "
                         f"{type(trigger).__name__}.can_merge() is False")


def _windowed_results(fn: WindowFunction) -> WindowFunction:
    """``fn`` with each output wrapped as ``{"start", "end", "key", "value"}``."""
    inner = fn.emit

    def emit(key: Any, w: TimeWindow, acc: Any, out: Callable[[Any], None]) -> None:
        inner(key, w, acc, lambda v: out({"start": w.start, "end": w.end, "key": key, "value": v}))

    return replace(fn, emit=emit)


__all__ = ["WindowedStream", "check_trigger"]

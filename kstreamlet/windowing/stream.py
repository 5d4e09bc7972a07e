"""Windowed streams: ``keyed.window(assigner)`` and ``keyed.count_window(size, slide)``.

Example (seed 003: per-sensor max temperature every 5 s of event time)::

    (readings.key_by(lambda r: r["id"], key_serde=serdes.STR)
        .window(TumblingEventTimeWindows.of(5000))
        .allowed_lateness(1000)
        .side_output_late_data("late")
        .max("temperature")
        .to("max-temperature"))

Outputs carry the key and, as timestamp, the window's ``max_timestamp``. Full-window
``process(fn)`` calls ``fn(key, window, elements, out)``; ``aggregate(agg, window_fn=f)``
combines incremental aggregation with ``f(key, window, result, out)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from kstreamlet import serdes as _serdes
from kstreamlet.functions import KeyedContext, KeyedProcessFunction, RuntimeContext
from kstreamlet.serdes import Serde
from kstreamlet.state.keyed import _decode_list, _encode_list
from kstreamlet.windowing.assigners import TimeWindow, WindowAssigner
from kstreamlet.windowing.operator import Trigger, WindowFunction, WindowOperator

if TYPE_CHECKING:
    from kstreamlet.dsl.stream import KeyedStream, Stream


def _json_codec(serde: Serde[Any] | None) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    s = serde or _serdes.JSON
    return s.serialize, s.deserialize


def list_codec(value_serde: Serde[Any]) -> tuple[Callable[[list[Any]], bytes], Callable[[bytes], list[Any]]]:
    """Element lists stored with the stream's own value serde."""
    ser, de = value_serde.serialize, value_serde.deserialize
    return (lambda items: _encode_list([ser(v) for v in items]),
            lambda raw: [de(b) for b in _decode_list(raw)])


def _emit_result(key: Any, w: TimeWindow, acc: Any, out: Callable[[Any], None]) -> None:
    out(acc)


class WindowedStream:
    """Configure a window, then finish with a window function."""

    def __init__(self, keyed: "KeyedStream", assigner: WindowAssigner) -> None:
        self._keyed = keyed
        self._assigner = assigner
        self._trigger = Trigger()
        self._lateness = 0
        self._late_tag: str | None = None
        self._emit_updates = False

    def trigger(self, trigger: Trigger) -> "WindowedStream":
        """Replace the default time trigger (``CountTrigger.of(n)``, ``ContinuousEventTimeTrigger.of(ms)``)."""
        self._trigger = trigger
        return self

    def allowed_lateness(self, ms: int) -> "WindowedStream":
        """Keep window state ``ms`` past the window end; late elements in that time re-fire it."""
        if ms < 0:
            raise ValueError("allowed lateness must be >= 0 ms")
        self._lateness = ms
        return self

    def side_output_late_data(self, tag: str) -> "WindowedStream":
        """Elements too late for every window go to ``.side_output(tag)`` of the result stream."""
        self._late_tag = tag
        return self

    def emit_updates(self) -> "WindowedStream":
        """Emit the updated result on every element (Kafka Streams style), not only when the window fires."""
        self._emit_updates = True
        return self

    def _build(self, fn: WindowFunction, out_serde: Serde[Any], name: str | None, op: str) -> "Stream":
        from kstreamlet.topology.nodes import KeyedProcessNode

        operator = WindowOperator(self._assigner, fn, self._trigger, self._lateness, self._late_tag, self._emit_updates)
        keyed = self._keyed
        node = KeyedProcessNode(operator, keyed.key_serde, name or f"window-{op}-{keyed._app._next_op_id()}")
        return keyed._then(node, value_serde=out_serde)

    def reduce(self, fn: Callable[[Any, Any], Any], serde: Serde[Any] | None = None, name: str | None = None,
               window_fn: Callable[[Any, TimeWindow, Any, Callable[[Any], None]], None] | None = None) -> "Stream":
        """Incremental ``fn(acc, value)``; emits the reduced value (or ``window_fn``'s outputs)."""
        vs = serde or self._keyed.value_serde
        ser, de = vs.serialize, vs.deserialize
        wf = WindowFunction(
            create=lambda: None,
            add=lambda v, acc: v if acc is None else fn(acc, v),
            merge=lambda a, b: b if a is None else a if b is None else fn(a, b),
            emit=window_fn or _emit_result,
            serialize=lambda acc: b"" if acc is None else b"\x01" + ser(acc),
            deserialize=lambda raw: None if not raw else de(raw[1:]),
        )
        return self._build(wf, vs, name, "reduce")

    def aggregate(self, agg: Any, accumulator_serde: Serde[Any] | None = None, output_serde: Serde[Any] | None = None,
                  name: str | None = None,
                  window_fn: Callable[[Any, TimeWindow, Any, Callable[[Any], None]], None] | None = None) -> "Stream":
        """Incremental :class:`~kstreamlet.state.keyed.AggregateFunction`; emits ``get_result``
        (or, with ``window_fn``, whatever ``window_fn(key, window, result, out)`` emits)."""
        ser, de = _json_codec(accumulator_serde)
        emit = window_fn or _emit_result
        wf = WindowFunction(
            create=agg.create_accumulator,
            add=agg.add,
            merge=agg.merge,
            emit=lambda key, w, acc, out: emit(key, w, agg.get_result(acc), out),
            serialize=ser,
            deserialize=de,
        )
        return self._build(wf, output_serde or _serdes.JSON, name, "aggregate")

    def process(self, fn: Callable[[Any, TimeWindow, list[Any], Callable[[Any], None]], None],
                output_serde: Serde[Any] | None = None, name: str | None = None) -> "Stream":
        """Full-window function ``fn(key, window, elements, out)`` (elements kept in state)."""
        ser, de = list_codec(self._keyed.value_serde)
        wf = WindowFunction(create=list, add=lambda v, acc: acc + [v], merge=lambda a, b: a + b,
                            emit=fn, serialize=ser, deserialize=de)
        return self._build(wf, output_serde or _serdes.JSON, name, "process")

    def apply(self, fn: Callable[[Any, TimeWindow, list[Any]], Any], output_serde: Serde[Any] | None = None,
              name: str | None = None) -> "Stream":
        """Like ``process`` but ``fn(key, window, elements)`` returns one output (None: nothing)."""
        def emit(key: Any, w: TimeWindow, items: list[Any], out: Callable[[Any], None]) -> None:
            r = fn(key, w, items)
            if r is not None:
                out(r)

        return self.process(emit, output_serde, name)

    def count(self, name: str | None = None) -> "Stream":
        return self.aggregate(_Count(), output_serde=_serdes.INT64, name=name)

    def sum(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None) -> "Stream":
        from kstreamlet.dsl.aggregations import extractor

        get = extractor(field)
        return self.aggregate(_Fold(lambda acc, v: acc + get(v), 0, lambda a, b: a + b), name=name)

    def min(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None) -> "Stream":
        from kstreamlet.dsl.aggregations import extractor

        get = extractor(field)
        return self.aggregate(_Fold(lambda acc, v: get(v) if acc is None or get(v) < acc else acc, None, min), name=name)

    def max(self, field: str | Callable[[Any], Any] | None = None, name: str | None = None) -> "Stream":
        from kstreamlet.dsl.aggregations import extractor

        get = extractor(field)
        return self.aggregate(_Fold(lambda acc, v: get(v) if acc is None or get(v) > acc else acc, None, max), name=name)


class _Count:
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, acc: int) -> int:
        return acc + 1

    def get_result(self, acc: int) -> int:
        return acc

    def merge(self, a: int, b: int) -> int:
        return a + b


class _Fold:
    """Aggregate of a fold (sum/min/max) with an explicit merge, so session windows can merge."""

    def __init__(self, step: Callable[[Any, Any], Any], zero: Any, merge: Callable[[Any, Any], Any]) -> None:
        self.step, self.zero, self._merge = step, zero, merge

    def create_accumulator(self) -> Any:
        return self.zero

    def add(self, value: Any, acc: Any) -> Any:
        return self.step(acc, value)

    def get_result(self, acc: Any) -> Any:
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        if b is None:
            return a
        return self._merge(a, b)


class CountWindowOperator(KeyedProcessFunction):
    """Count windows (Flink's ``countWindow``): tumbling (``size``) or sliding (``size``, ``slide``)."""

    def __init__(self, size: int, slide: int | None, fn: Callable[[Any, list[Any], Callable[[Any], None]], None],
                 value_serde: Serde[Any]) -> None:
        self.size = size
        self.slide = slide or size
        self.fn = fn
        self.value_serde = value_serde

    def open(self, ctx: RuntimeContext) -> None:
        from kstreamlet.state.keyed import ListStateDescriptor, ValueStateDescriptor

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


def count_window(keyed: "KeyedStream", size: int, slide: int | None, fn: Callable[..., Any],
                 output_serde: Serde[Any] | None, name: str | None) -> "Stream":
    from kstreamlet.topology.nodes import KeyedProcessNode

    if size <= 0 or (slide is not None and slide <= 0):
        raise ValueError("count window size and slide must be > 0")
    op = CountWindowOperator(size, slide, fn, keyed.value_serde)
    node = KeyedProcessNode(op, keyed.key_serde, name or f"count-window-{keyed._app._next_op_id()}")
    return keyed._then(node, value_serde=output_serde or _serdes.JSON)


__all__ = ["WindowedStream", "count_window", "list_codec"]

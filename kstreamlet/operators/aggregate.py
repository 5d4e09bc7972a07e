"""Running aggregations: one set of aggregate functions for keyed streams and windows.

``Count``, ``Sum``, ``Min`` and ``Max`` are :class:`~kstreamlet.state.keyed.AggregateFunction` s
(with a ``merge``, so session windows can merge them); ``Aggregate`` wraps a user's
``initializer``/``adder``. On a keyed stream they run in :class:`RunningAggregate`, which keeps
the accumulator in one ValueState and emits it on every record (the accumulator is the result
for all of them); on a windowed stream the window operator runs them
(:func:`kstreamlet.operators.window.aggregate_function`). ``RunningReduce`` is the keyed
``reduce(fn)``.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from kstreamlet.api.context import KeyedContext, RuntimeContext
from kstreamlet.api.functions import KeyedProcessFunction
from kstreamlet.serdes import Serde
from kstreamlet.state.keyed import ValueStateDescriptor


def extractor(field: str | Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """Value itself, ``value[field]`` for a str, or a callable."""
    if field is None:
        return lambda v: v
    if isinstance(field, str):
        return operator.itemgetter(field)
    return field


class RunningAggregation:
    """An aggregate function whose result is its accumulator (``get_result`` is the identity)."""

    def create_accumulator(self) -> Any:
        return None

    def add(self, value: Any, acc: Any) -> Any:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def get_result(self, acc: Any) -> Any:
        return acc

    def merge(self, a: Any, b: Any) -> Any:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class Count(RunningAggregation):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, acc: int) -> int:
        return acc + 1

    def merge(self, a: int, b: int) -> int:
        return a + b


def _merge(a: Any, b: Any, fn: Callable[[Any, Any], Any]) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


class Sum(RunningAggregation):
    """Sum of ``get(value)``, from 0."""

    def __init__(self, get: Callable[[Any], Any]) -> None:
        self.get = get

    def create_accumulator(self) -> Any:
        return 0

    def add(self, value: Any, acc: Any) -> Any:
        return acc + self.get(value)

    def merge(self, a: Any, b: Any) -> Any:
        return _merge(a, b, lambda x, y: x + y)


class Min(RunningAggregation):
    """Smallest ``get(value)`` (the earlier one on ties); None before the first value."""

    def __init__(self, get: Callable[[Any], Any]) -> None:
        self.get = get

    def add(self, value: Any, acc: Any) -> Any:
        x = self.get(value)
        return x if acc is None or x < acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        return _merge(a, b, min)


class Max(RunningAggregation):
    """Largest ``get(value)`` (the earlier one on ties); None before the first value."""

    def __init__(self, get: Callable[[Any], Any]) -> None:
        self.get = get

    def add(self, value: Any, acc: Any) -> Any:
        x = self.get(value)
        return x if acc is None or x > acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        return _merge(a, b, max)


class Aggregate:
    """``adder(value, accumulator)`` from ``initializer()`` (a keyed ``aggregate``; its result is the
    accumulator; no merge, keyed aggregations never merge)."""

    def __init__(self, initializer: Callable[[], Any], adder: Callable[[Any, Any], Any]) -> None:
        # Attributes, not methods: RunningAggregate calls the user's functions directly.
        self.create_accumulator: Callable[[], Any] = initializer
        self.add: Callable[[Any, Any], Any] = adder


class RunningAggregate(KeyedProcessFunction):
    """Runs a :class:`RunningAggregation` (or :class:`Aggregate`) per key with one ValueState; emits the
    new accumulator per record."""

    def __init__(self, agg: RunningAggregation | Aggregate, serde: Serde[Any]) -> None:
        self.agg = agg
        self.serde = serde

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value", self.serde))
        self._create = self.agg.create_accumulator
        self._add = self.agg.add

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        cur = self.state.value()
        new = self._add(value, self._create() if cur is None else cur)
        self.state.update(new)
        ctx.emit(new)


class RunningReduce(KeyedProcessFunction):
    """Running ``fn(accumulated, value)`` per key; the first value is its own result."""

    def __init__(self, fn: Callable[[Any, Any], Any], serde: Serde[Any]) -> None:
        self.fn = fn
        self.serde = serde

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value", self.serde))

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        cur = self.state.value()
        new = value if cur is None else self.fn(cur, value)
        self.state.update(new)
        ctx.emit(new)


__all__ = ["extractor", "RunningAggregation", "Count", "Sum", "Min", "Max", "Aggregate", "RunningAggregate",
           "RunningReduce"]

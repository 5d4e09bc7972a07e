"""Running aggregations on keyed streams, as keyed process functions with one ValueState."""

from __future__ import annotations

import operator
from typing import Any, Callable

from kstreamlet.functions import KeyedContext, KeyedProcessFunction, RuntimeContext
from kstreamlet.serdes import Serde
from kstreamlet.state.keyed import ValueStateDescriptor


def extractor(field: str | Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """Value itself, ``value[field]`` for a str, or a callable."""
    if field is None:
        return lambda v: v
    if isinstance(field, str):
        return operator.itemgetter(field)
    return field


class Reduce(KeyedProcessFunction):
    def __init__(self, fn: Callable[[Any, Any], Any], serde: Serde[Any], get: Callable[[Any], Any] | None = None) -> None:
        self.fn = fn
        self.serde = serde
        self.get = get

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value", self.serde))

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        if self.get is not None:
            value = self.get(value)
        cur = self.state.value()
        new = value if cur is None else self.fn(cur, value)
        self.state.update(new)
        ctx.emit(new)


class Aggregate(KeyedProcessFunction):
    def __init__(self, initializer: Callable[[], Any], adder: Callable[[Any, Any], Any], serde: Serde[Any]) -> None:
        self.initializer = initializer
        self.adder = adder
        self.serde = serde

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value", self.serde))

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        cur = self.state.value()
        new = self.adder(value, self.initializer() if cur is None else cur)
        self.state.update(new)
        ctx.emit(new)

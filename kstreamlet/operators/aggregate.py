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
from kstreamlet.state.cache import RecordCache
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
        raise TypeError(f"{type(self).__name__} must define add(value, acc)")

    def get_result(self, acc: Any) -> Any:
        return acc

    def merge(self, a: Any, b: Any) -> Any:  # pragma: no cover - every subclass overrides
        raise TypeError(f"{type(self).__name__} must define merge(a, b)")


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


#: The cache size an operator with ``cache=True`` gets when ``record_cache_max_bytes`` is 0 (Kafka
#: Streams' default ``statestore.cache.max.bytes``).
DEFAULT_CACHE_BYTES = 10 * 1024 * 1024


def cache_limit(cache: bool | None, cache_max_bytes: int | None) -> int | None | bool:
    """An operator's cache choice: False = off, None = ``record_cache_max_bytes``, an int = its own limit."""
    if cache_max_bytes is not None:
        if isinstance(cache_max_bytes, bool) or not isinstance(cache_max_bytes, int) or cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must be a non-negative int (0 = no cache), got {cache_max_bytes!r}")
        if cache is False and cache_max_bytes:
            raise ValueError("cache=False contradicts cache_max_bytes > 0")
        return cache_max_bytes if cache_max_bytes else False
    if cache is None:
        return None
    if not isinstance(cache, bool):
        raise ValueError(f"cache must be True, False or None (the record_cache_max_bytes setting), got {cache!r}")
    return True if cache else False


class _Cached(KeyedProcessFunction):
    """A per-key running value in one ValueState, optionally behind a :class:`RecordCache`."""

    serde: Serde[Any]
    #: False = off, None = the ``record_cache_max_bytes`` setting, True = on (the setting's budget, or
    #: DEFAULT_CACHE_BYTES when it is 0), an int = this operator's own limit per task.
    cache: int | None | bool = None

    #: The key's new running value from its current one (None: no value yet) and the input value;
    #: each running operator defines it.
    _fold: Callable[[Any, Any], Any]

    def _open_state(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value", self.serde))
        self._cache = self._open_cache(ctx)
        if self._cache is not None:
            self.process_element = self._process_cached  # type: ignore[method-assign]
            self._keyctx = ctx.key_context

    def process_element(self, value: Any, ctx: KeyedContext) -> None:
        new = self._fold(self.state.value(), value)
        self.state.update(new)
        ctx.emit(new)

    def _process_cached(self, value: Any, ctx: KeyedContext) -> None:
        cache = self._cache
        assert cache is not None
        if cache.forward is None:
            cache.forward = ctx._forward
        kb = self._keyctx.key_bytes
        entry = cache.entries.get(kb)
        cur = entry[1] if entry is not None else self.state.value()
        cache.put(kb, ctx.key, self._fold(cur, value), ctx.timestamp, entry)

    def _open_cache(self, ctx: RuntimeContext) -> RecordCache | None:
        task = ctx.task
        if self.cache is False or not hasattr(task, "add_flusher"):
            return None  # off, or a recording task (describe, tools state): nothing is processed
        total = int(getattr(task.settings, "record_cache_max_bytes", 0) or 0) if task.settings is not None else 0
        own: int | None = None
        if isinstance(self.cache, bool):  # True
            own = None if total else DEFAULT_CACHE_BYTES
        elif isinstance(self.cache, int):
            own = self.cache
        elif not total:
            return None  # the setting is 0: off
        operator = ctx.operator_name or "aggregate"

        def on_error(key_bytes: bytes, ts: int, exc: BaseException) -> None:
            handler = task.collector.errors
            if handler is None:
                raise exc
            handler.handle_timer(operator, task.id, key_bytes, "cache", ts, exc, now=task.clock())

        cache = RecordCache(ctx.raw_store("value"), self.serde.serialize, own, total, on_error, task)
        task.add_flusher(cache.flush)
        task.add_participant(cache)
        return cache


class RunningAggregate(_Cached):
    """Runs a :class:`RunningAggregation` (or :class:`Aggregate`) per key with one ValueState; emits the
    new accumulator per record (with a record cache: per key per checkpoint, see :mod:`kstreamlet.state.cache`)."""

    def __init__(self, agg: RunningAggregation | Aggregate, serde: Serde[Any],
                 cache: int | None | bool = None) -> None:
        self.agg = agg
        self.serde = serde
        self.cache = cache

    def open(self, ctx: RuntimeContext) -> None:
        self._create = self.agg.create_accumulator
        self._add = self.agg.add
        self._open_state(ctx)

    def _fold(self, cur: Any, value: Any) -> Any:
        return self._add(value, self._create() if cur is None else cur)


class RunningReduce(_Cached):
    """Running ``fn(accumulated, value)`` per key; the first value is its own result."""

    def __init__(self, fn: Callable[[Any, Any], Any], serde: Serde[Any], cache: int | None | bool = None) -> None:
        self.fn = fn
        self.serde = serde
        self.cache = cache

    def open(self, ctx: RuntimeContext) -> None:
        self._open_state(ctx)

    def _fold(self, cur: Any, value: Any) -> Any:
        return value if cur is None else self.fn(cur, value)


__all__ = ["DEFAULT_CACHE_BYTES", "cache_limit", "extractor", "RunningAggregation", "Count", "Sum", "Min", "Max", "Aggregate", "RunningAggregate",
           "RunningReduce"]

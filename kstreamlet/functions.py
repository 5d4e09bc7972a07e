"""User functions with state and timers (Flink's ``KeyedProcessFunction``).

Example — alert when a sensor's temperature rises for 1 s (seed 003, section 九)::

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

from typing import TYPE_CHECKING, Any

from kstreamlet.runtime.context import ProcessorContext
from kstreamlet.state.codec import decode_list, key_prefix
from kstreamlet.state.keyed import KeyContext, ListState, make_state

if TYPE_CHECKING:
    from kstreamlet.runtime.timers import TimerService
    from kstreamlet.state.store import Store
    from kstreamlet.state.keyed import (
        AggregatingState,
        AggregatingStateDescriptor,
        ListStateDescriptor,
        MapState,
        MapStateDescriptor,
        ReducingState,
        ReducingStateDescriptor,
        StateDescriptor,
        ValueState,
        ValueStateDescriptor,
    )


class RuntimeContext:
    """Given to ``open``: declares state for this task's copy of the function."""

    def __init__(self, task: Any, node: Any) -> None:
        self._task = task
        self._node = node

    @property
    def partition(self) -> int:
        return self._task.partition  # type: ignore[no-any-return]

    @property
    def task_id(self) -> str:
        return self._task.id  # type: ignore[no-any-return]

    def raw_store(self, name: str) -> "Store":
        """This operator's store ``name`` itself (bytes keys and values; operators lay out their
        own entries with :mod:`kstreamlet.state.codec`)."""
        return self._task.store(self._node.store_name(name))  # type: ignore[no-any-return]

    @property
    def key_context(self) -> "KeyContext":
        """The task's current key (``key_bytes``) that keyed state is scoped to."""
        return self._task.keyctx  # type: ignore[no-any-return]

    def state(self, desc: "StateDescriptor") -> Any:
        """The keyed state object for any descriptor (``get_state`` & co. are the typed forms)."""
        return make_state(desc, self.raw_store(desc.name), self._task.keyctx)

    def _state(self, desc: "StateDescriptor") -> Any:
        return self.state(desc)

    def get_state(self, desc: "ValueStateDescriptor") -> "ValueState[Any]":
        return self._state(desc)  # type: ignore[no-any-return]

    def get_list_state(self, desc: "ListStateDescriptor") -> "ListState[Any]":
        return self._state(desc)  # type: ignore[no-any-return]

    def get_map_state(self, desc: "MapStateDescriptor") -> "MapState[Any]":
        return self._state(desc)  # type: ignore[no-any-return]

    def get_reducing_state(self, desc: "ReducingStateDescriptor") -> "ReducingState[Any]":
        return self._state(desc)  # type: ignore[no-any-return]

    def get_aggregating_state(self, desc: "AggregatingStateDescriptor") -> "AggregatingState[Any, Any]":
        return self._state(desc)  # type: ignore[no-any-return]

    def get_operator_list_state(self, desc: "ListStateDescriptor") -> "OperatorListState":
        """Per-task (not per-key) list state, e.g. for a source's or operator's own bookkeeping."""
        store = self.raw_store(desc.name)
        return OperatorListState(ListState(store, self._task.operator_keyctx, desc))


    def get_union_list_state(self, desc: "ListStateDescriptor") -> "UnionListState":
        """Operator list state redistributed as a union (Flink's union list state): right after the
        task opens, ``get()`` returns the concatenation of every partition's list (read from the
        store's changelog); once this task writes, it sees its own list."""
        store = self.raw_store(desc.name)
        own = ListState(store, self._task.operator_keyctx, desc)
        union: list[Any] = []
        for part, entries in sorted(self._task.read_all_partitions(store).items()):
            raw = entries.get(key_prefix(b""))
            if raw is not None:
                union.extend(desc.serde.deserialize(b) for b in decode_list(raw))
        return UnionListState(own, union)


class UnionListState:
    """See :meth:`RuntimeContext.get_union_list_state`."""

    def __init__(self, own: Any, union: list[Any]) -> None:
        self._own = own
        self._union: list[Any] | None = union

    def get(self) -> list[Any]:
        return list(self._union) if self._union is not None else self._own.get()  # type: ignore[no-any-return]

    def add(self, value: Any) -> None:
        self._union = None
        self._own.add(value)

    def update(self, values: list[Any]) -> None:
        self._union = None
        self._own.update(values)

    def clear(self) -> None:
        self._union = None
        self._own.clear()


class OperatorListState:
    """A list scoped to the task (partition) rather than to a key."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def get(self) -> list[Any]:
        return self._inner.get()  # type: ignore[no-any-return]

    def add(self, value: Any) -> None:
        self._inner.add(value)

    def update(self, values: list[Any]) -> None:
        self._inner.update(values)

    def clear(self) -> None:
        self._inner.clear()


class KeyedContext(ProcessorContext):
    """``ctx`` in ``process_element`` / ``on_timer``: a ProcessorContext plus ``timers``."""

    __slots__ = ("timers", "time_domain", "_keyctx")

    def __init__(self, task: Any, forward: Any, sides: Any, timers: "TimerService") -> None:
        super().__init__(task, forward, sides)
        self.timers = timers
        self._keyctx: KeyContext = task.keyctx
        #: In ``on_timer``: ``"event"`` or ``"processing"``; None in ``process_element``.
        self.time_domain: str | None = None

    @property
    def current_watermark(self) -> int:
        """The task's event-time watermark (ms)."""
        return self._task.watermarks.watermark  # type: ignore[no-any-return]

    @property
    def key_bytes(self) -> bytes:
        """The current key as serialized with the stream's key serde (what keyed state is scoped by)."""
        return self._keyctx.key_bytes

    @property
    def is_late(self) -> bool:
        """True when the current record's timestamp is at or behind the watermark."""
        return self.timestamp <= self._task.watermarks.watermark


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


class BroadcastState:
    """A map every instance holds a full copy of."""

    def __init__(self) -> None:
        self._data: dict[Any, Any] = {}
        self.writable = False

    def get(self, key: Any, default: Any = None) -> Any:
        return self._data.get(key, default)

    def contains(self, key: Any) -> bool:
        return key in self._data

    def items(self) -> Iterator[tuple[Any, Any]]:
        return iter(list(self._data.items()))

    def keys(self) -> Iterator[Any]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def _check(self) -> None:
        if not self.writable:
            raise PermissionError("broadcast state is read-only in process_element; write it in process_broadcast_element")

    def put(self, key: Any, value: Any) -> None:
        self._check()
        self._data[key] = value

    def remove(self, key: Any) -> None:
        self._check()
        self._data.pop(key, None)

    def clear(self) -> None:
        self._check()
        self._data.clear()


class BroadcastProcessFunction:
    """Non-keyed: override ``process_element`` and ``process_broadcast_element``."""

    def open(self, ctx: RuntimeContext) -> None:
        """Called once per task copy."""

    def process_element(self, value: Any, ctx: ProcessorContext) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element(value, ctx)")

    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_broadcast_element(value, ctx)")


class KeyedBroadcastProcessFunction(KeyedProcessFunction):
    """Keyed: keyed state and timers as in KeyedProcessFunction, plus the broadcast side."""

    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_broadcast_element(value, ctx)")

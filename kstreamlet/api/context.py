"""The contexts user functions and operators see, and the state wrappers they hand out.

- :class:`ProcessorContext`: ``ctx`` of ``stream.process(fn)`` — the current record, ``emit``,
  ``side_output``.
- :class:`KeyedContext`: ``ctx`` of a keyed function's ``process_element`` / ``on_timer`` — plus
  ``timers``, the watermark and the current key.
- :class:`RuntimeContext`: ``ctx`` of ``open`` — declares state (keyed, operator, union list)
  and gives operators their raw stores.

They see their task only through :class:`~kstreamlet.api.task.TaskServices`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from kstreamlet.state.codec import key_prefix
from kstreamlet.state.keyed import (
    AggregatingState,
    KeyContext,
    ListState,
    MapState,
    ReducingState,
    ValueState,
    make_state,
)

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices
    from kstreamlet.state.keyed import (
        AggregatingStateDescriptor,
        ListStateDescriptor,
        MapStateDescriptor,
        ReducingStateDescriptor,
        StateDescriptor,
        ValueStateDescriptor,
    )
    from kstreamlet.state.store import Store


class StoreNamer(Protocol):
    """The operator a RuntimeContext belongs to: how its state names map to store names."""

    def store_name(self, state_name: str) -> str: ...


class Timers(Protocol):
    """``ctx.timers`` of a keyed function (the runtime's ``TimerService``)."""

    def current_watermark(self) -> int: ...
    def current_processing_time(self) -> int: ...
    def register_event_time(self, ts: int) -> None: ...
    def register_processing_time(self, ts: int) -> None: ...
    def delete_event_time(self, ts: int) -> None: ...
    def delete_processing_time(self, ts: int) -> None: ...


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


class ProcessorContext:
    """What a ``process`` function sees of the record being processed and how it emits.

    ``key`` and ``timestamp`` (ms) are the current record's; ``topic``, ``partition``,
    ``offset`` and ``headers`` describe the input record it came from. ``emit`` forwards a
    value downstream (keeping key and timestamp unless given); ``side_output(tag, value)``
    sends to the stream obtained with ``.side_output(tag)``.

    Example::

        def split_words(line, ctx):
            for w in line.split():
                ctx.emit(w, key=w)
            if not line:
                ctx.side_output("empty", ctx.offset)
    """

    __slots__ = ("key", "timestamp", "_task", "_forward", "_sides", "broadcast_state")

    def __init__(self, task: "TaskServices", forward: Callable[[Any, Any, int], None],
                 sides: dict[str, Callable[[Any, Any, int], None]]) -> None:
        self.key: Any = None
        self.timestamp: int = 0
        self._task = task
        self._forward = forward
        self._sides = sides
        #: In a connected broadcast stream: the read-only broadcast state (else None).
        self.broadcast_state: BroadcastState | None = None

    def emit(self, value: Any, key: Any = ..., timestamp: int | None = None) -> None:
        """Forward ``value`` to the next operators."""
        self._forward(self.key if key is ... else key, value, self.timestamp if timestamp is None else timestamp)

    def side_output(self, tag: str, value: Any, key: Any = ...) -> None:
        """Send ``value`` to the side output named ``tag`` (dropped if nobody reads that tag)."""
        out = self._sides.get(tag)
        if out is not None:
            out(self.key if key is ... else key, value, self.timestamp)

    @property
    def topic(self) -> str:
        return self._task.msg.topic()

    @property
    def partition(self) -> int:
        return self._task.msg.partition()

    @property
    def offset(self) -> int:
        return self._task.msg.offset()

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return self._task.msg.headers() or []

    @property
    def task_id(self) -> str:
        return self._task.id


class KeyedContext(ProcessorContext):
    """``ctx`` in ``process_element`` / ``on_timer``: a ProcessorContext plus ``timers``."""

    __slots__ = ("timers", "time_domain", "_keyctx")

    def __init__(self, task: "TaskServices", forward: Callable[[Any, Any, int], None],
                 sides: dict[str, Callable[[Any, Any, int], None]], timers: "Timers") -> None:
        super().__init__(task, forward, sides)
        self.timers = timers
        self._keyctx: KeyContext = task.keyctx
        #: In ``on_timer``: ``"event"`` or ``"processing"``; None in ``process_element``.
        self.time_domain: str | None = None

    @property
    def current_watermark(self) -> int:
        """The task's event-time watermark (ms)."""
        return self._task.watermark

    @property
    def key_bytes(self) -> bytes:
        """The current key as serialized with the stream's key serde (what keyed state is scoped by)."""
        return self._keyctx.key_bytes

    @property
    def is_late(self) -> bool:
        """True when the current record's timestamp is behind the watermark (``ts < watermark``,
        Flink's rule: a record *at* the watermark is not late)."""
        return self.timestamp < self._task.watermark


class RuntimeContext:
    """Given to ``open``: declares state for this task's copy of the function."""

    def __init__(self, task: "TaskServices", node: "StoreNamer") -> None:
        self._task = task
        self._node = node

    @property
    def partition(self) -> int:
        return self._task.partition

    @property
    def task_id(self) -> str:
        return self._task.id

    @property
    def task(self) -> "TaskServices":
        """The task itself (for operators that join its checkpoint, e.g. a record cache)."""
        return self._task

    @property
    def operator_name(self) -> str | None:
        """The operator's (node's) name."""
        return getattr(self._node, "name", None)

    def raw_store(self, name: str) -> "Store":
        """This operator's store ``name`` itself (bytes keys and values; operators lay out their
        own entries with :mod:`kstreamlet.state.codec`)."""
        return self._task.store(self._node.store_name(name))

    @property
    def key_context(self) -> "KeyContext":
        """The task's current key (``key_bytes``) that keyed state is scoped to."""
        return self._task.keyctx

    def state(self, desc: "StateDescriptor") -> Any:
        """The keyed state object for any descriptor (``get_state`` & co. are the typed forms)."""
        return make_state(desc, self.raw_store(desc.name), self._task.keyctx)

    def get_state(self, desc: "ValueStateDescriptor") -> "ValueState[Any]":
        return self.state(desc)  # make_state: the state class follows the descriptor's

    def get_list_state(self, desc: "ListStateDescriptor") -> "ListState[Any]":
        return self.state(desc)  # make_state: the state class follows the descriptor's

    def get_map_state(self, desc: "MapStateDescriptor") -> "MapState[Any]":
        return self.state(desc)  # make_state: the state class follows the descriptor's

    def get_reducing_state(self, desc: "ReducingStateDescriptor") -> "ReducingState[Any]":
        return self.state(desc)  # make_state: the state class follows the descriptor's

    def get_aggregating_state(self, desc: "AggregatingStateDescriptor") -> "AggregatingState[Any, Any]":
        return self.state(desc)  # make_state: the state class follows the descriptor's

    def get_operator_list_state(self, desc: "ListStateDescriptor") -> "OperatorListState":
        """Per-task (not per-key) list state, e.g. for a source's or operator's own bookkeeping."""
        store = self.raw_store(desc.name)
        return OperatorListState(ListState(store, self._task.operator_keyctx, desc))


    def get_union_list_state(self, desc: "ListStateDescriptor") -> "UnionListState":
        """Operator list state redistributed as a union (Flink's union list state): right after the
        task opens, ``get()`` returns the concatenation of every partition's list (read from the
        store's changelog); once this task writes, it sees its own list."""
        store = self.raw_store(desc.name)
        own: ListState[Any] = ListState(store, self._task.operator_keyctx, desc)
        union: list[Any] = []
        for part, entries in sorted(self._task.read_all_partitions(store).items()):
            raw = entries.get(key_prefix(b""))
            if raw is not None:
                union.extend(own.decode_stored(raw))  # the list's layout (with TTL: per element)
        return UnionListState(own, union)


class UnionListState:
    """See :meth:`RuntimeContext.get_union_list_state`."""

    def __init__(self, own: "ListState[Any]", union: list[Any]) -> None:
        self._own = own
        self._union: list[Any] | None = union

    def get(self) -> list[Any]:
        return list(self._union) if self._union is not None else self._own.get()

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

    def __init__(self, inner: "ListState[Any]") -> None:
        self._inner = inner

    def get(self) -> list[Any]:
        return self._inner.get()

    def add(self, value: Any) -> None:
        self._inner.add(value)

    def update(self, values: list[Any]) -> None:
        self._inner.update(values)

    def clear(self) -> None:
        self._inner.clear()


__all__ = ["ProcessorContext", "KeyedContext", "RuntimeContext", "BroadcastState", "UnionListState",
           "OperatorListState", "Timers", "StoreNamer"]

"""What nodes, operators, contexts and sinks may ask of the task they run in.

:class:`TaskServices` is the whole contract between the graph/operator layer
(``topology/``, ``operators/``, ``api/``, ``sinks/``) and the runtime: the runtime's
:class:`~kstreamlet.runtime.task.Task` implements it, and so does the task the
TopologyTestDriver runs. Nothing above the runtime imports the concrete ``Task``
(Kafka Streams' processors likewise see only ``ProcessorContext``). Typing only (and :class:`Record`): no
run-time cost on the record path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from kstreamlet.config import Settings
    from kstreamlet.state.keyed import KeyContext
    from kstreamlet.state.store import Store

#: ``push(key, value, timestamp)``: a compiled node.
Push = Callable[[Any, Any, int], None]


class InputRecord(Protocol):
    """The input record being processed (a ``confluent_kafka.Message`` or the driver's)."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...


class Record:
    """An :class:`InputRecord` built from its parts, not fetched: the TopologyTestDriver's piped
    records, and an async operator's held records issued again after a restore."""

    __slots__ = ("_t", "_p", "_o", "_k", "_v", "_ts", "_h")

    def __init__(self, t: str, p: int, o: int, k: bytes | None, v: bytes | None, ts: int,
                 h: list[tuple[str, bytes]] | None) -> None:
        self._t, self._p, self._o, self._k, self._v, self._ts, self._h = t, p, o, k, v, ts, h

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._h

    def error(self) -> None:
        return None


class Collector(Protocol):
    """Where serialized outputs go (runtime/collector.py, or the test driver's)."""

    #: The error-policy handler failing timer calls are handed to (None: errors propagate).
    errors: Any

    def send(self, topic: str, key: bytes | None, value: bytes | None, timestamp: int, partition: int,
             headers: list[tuple[str, bytes]] | None = None) -> None: ...

    def send_watermark(self, topic: str, partition: int, key: bytes, ts: int,
                       headers: list[tuple[str, bytes]]) -> None: ...


class Participant(Protocol):
    """An operator whose work commits or aborts with the task's checkpoint (a 2PC sink)."""

    def prepare_commit(self) -> None: ...
    def committed(self) -> None: ...
    def aborted(self) -> None: ...
    def recover(self) -> None: ...
    def close(self) -> None: ...


class TaskServices(Protocol):
    """One task (a sub-topology on one partition number), as its nodes and operators see it."""

    #: ``<subtopology>_<partition>``.
    id: str
    partition: int
    #: The input record being processed (None between records).
    msg: Any
    #: True while timers fire: outputs then have no input record (``msg`` is the last one).
    firing_timers: bool
    #: The application's settings.
    settings: "Settings"
    #: Wall-clock milliseconds (the driver's is advanced by the test).
    clock: Callable[[], int]
    #: Key scope of keyed state (set per record by keyed operators).
    keyctx: "KeyContext"
    #: The empty key scope: operator (per-task) state.
    operator_keyctx: "KeyContext"
    collector: Collector
    #: The task's async operator queues (operators/async_ops.py registers each): while one is full
    #: the task manager parks the task's records instead of routing them.
    async_queues: list[Any]

    @property
    def watermark(self) -> int:
        """The task's current event-time watermark."""
        ...

    def compiled(self, node: Any) -> Push:
        """``node``'s push function in this task (compiled once)."""
        ...

    def store(self, name: str) -> "Store":
        """The task's state store ``name`` (created, and registered for restoration, on first use)."""
        ...

    def read_all_partitions(self, store: "Store") -> dict[int, dict[bytes, bytes]]:
        """Committed contents of every partition of ``store`` (union list state)."""
        ...

    def timer_service(self, store_name: str) -> Any:
        """Timers kept in store ``store_name``, scoped by the current key."""
        ...

    def register_timers(self, timers: Any, fire: Callable[[int, bytes, str], None],
                        operator: str | None = None, ctx: Any = None) -> None:
        """Have ``fire(ts, key_bytes, domain)`` called for each due timer of ``timers``."""
        ...

    def on_close(self, fn: Callable[[], None]) -> None: ...

    def add_participant(self, participant: Participant) -> None: ...

    def add_flusher(self, flush: Callable[[], bool]) -> None:
        """Have ``flush()`` run first at every checkpoint (record caches); True = it forwarded something."""
        ...

    def add_broadcast_handler(self, topic: str, handler: Callable[[bytes | None, bytes | None, int], None]) -> None: ...

    def partitions_of(self, topic: str) -> int:
        """Partition count of ``topic``."""
        ...

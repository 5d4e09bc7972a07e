"""Broadcast state (seed 002, BroadcastState): a low-throughput stream every instance sees whole.

    users = app.broadcast(source=MySQLPollingSource(...), name="user-info")   # or app.broadcast("rules-topic")
    events.connect(users).process(Enrich())

``process_element(value, ctx)`` sees ``ctx.broadcast_state`` read-only;
``process_broadcast_element(value, ctx)`` may write it. Keyed variant
(:class:`KeyedBroadcastProcessFunction`, on a keyed stream) also has keyed state and
``ctx.apply_to_keyed_state(descriptor, fn)`` on the broadcast side.

How it runs: the broadcast topic is not split among group members — every member
reads all of it (``read_committed``, from the beginning at start, catching up before it
processes data) and hands each element to every task connected to it. Broadcast state is
therefore a function of the broadcast topic and survives restarts by re-reading it (keep
the topic compacted; sources use a compacted internal topic). Elements from the broadcast
side are not part of a checkpoint: ``process_broadcast_element`` should update state, not emit.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable, Iterator

from kstreamlet.functions import KeyedContext, KeyedProcessFunction, RuntimeContext
from kstreamlet.runtime.context import ProcessorContext
from kstreamlet.serdes import Serde
from kstreamlet.topology.builder import BroadcastSpec
from kstreamlet.topology.nodes import Node, Push

if TYPE_CHECKING:
    from kstreamlet.dsl.stream import Stream
    from kstreamlet.runtime.task import Task
    from kstreamlet.state.keyed import StateDescriptor


class BroadcastStream(BroadcastSpec):
    """A broadcast input: ``app.broadcast(topic)`` or ``app.broadcast(source=..., name=...)``."""


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

    def process_element(self, value: Any, ctx: Any) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_element(value, ctx)")

    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_broadcast_element(value, ctx)")


class KeyedBroadcastProcessFunction(KeyedProcessFunction):
    """Keyed: keyed state and timers as in KeyedProcessFunction, plus the broadcast side."""

    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        raise TypeError(f"{type(self).__name__} must implement process_broadcast_element(value, ctx)")


class _BroadcastSideContext:
    """``ctx`` of ``process_broadcast_element``."""

    def __init__(self, task: "Task", node: "BroadcastProcessNode", state: BroadcastState, forward: Push) -> None:
        self._task, self._node, self.broadcast_state, self._forward = task, node, state, forward
        self.key: Any = None
        self.timestamp = 0

    def emit(self, value: Any, key: Any = None, timestamp: int | None = None) -> None:
        self._forward(key, value, self.timestamp if timestamp is None else timestamp)

    def apply_to_keyed_state(self, desc: "StateDescriptor", fn: Callable[[Any, Any], None]) -> None:
        """Call ``fn(key, state)`` for every key that has a value in ``desc``'s state on this task."""
        import struct

        from kstreamlet.state.keyed import make_state

        store = self._task.store(self._node.store_name(desc.name))
        keyctx = self._task.keyctx
        state = make_state(desc, store, keyctx)
        de = self._node.key_serde.deserialize if self._node.key_serde is not None else (lambda b: b)
        seen: set[bytes] = set()
        for k, _ in list(store.iter_range(b"", None)):
            (n,) = struct.unpack_from(">I", k)
            kb = k[4:4 + n]
            if kb in seen:
                continue
            seen.add(kb)
            keyctx.key_bytes = kb
            fn(de(kb), state)


class BroadcastProcessNode(Node):
    """Data side of a connected stream; broadcast elements arrive through the task's handlers."""

    kind = "broadcast_process"

    def __init__(self, fn: Any, broadcast: BroadcastStream, key_serde: Serde[Any] | None, name: str | None = None) -> None:
        super().__init__(name)
        self.fn = fn
        self.broadcast = broadcast
        self.key_serde = key_serde
        self.uses_event_time = key_serde is not None

    def store_name(self, state_name: str) -> str:
        return f"{self.name}-{state_name}"

    def compile(self, task: "Task") -> Push:
        fn = copy.copy(self.fn)
        child = self.compile_children(task)
        state = BroadcastState()
        if isinstance(fn, KeyedBroadcastProcessFunction):
            from kstreamlet.topology.nodes import KeyedProcessNode

            # The keyed operator gives keyed state, timers and key scoping; same name, same stores.
            inner = KeyedProcessNode(fn, self.key_serde, self.name)  # type: ignore[arg-type]
            inner.children = self.children
            data_push, kctx = inner.compile_fn(task, fn)
            kctx.broadcast_state = state
        else:
            fn.open(RuntimeContext(task, self))
            ctx = ProcessorContext(task, child, {})
            ctx.broadcast_state = state
            process_element = fn.process_element

            def data_push(k: Any, v: Any, ts: int) -> None:
                ctx.key = k
                ctx.timestamp = ts
                process_element(v, ctx)

        bctx = _BroadcastSideContext(task, self, state, child)
        kde = self.broadcast.key_serde.deserialize
        vde = self.broadcast.value_serde.deserialize

        def on_broadcast(key: bytes | None, value: bytes | None, ts: int) -> None:
            state.writable = True
            try:
                bctx.key = kde(key) if key is not None else None
                bctx.timestamp = ts
                fn.process_broadcast_element(vde(value) if value is not None else None, bctx)
            finally:
                state.writable = False

        task.add_broadcast_handler(self.broadcast.topic, on_broadcast)
        return data_push


class BroadcastConnectedStream:
    """``stream.connect(broadcast)``: finish with ``.process(fn)``."""

    def __init__(self, stream: "Stream", broadcast: BroadcastStream) -> None:
        self._stream, self._broadcast = stream, broadcast

    def process(self, fn: Any, output_serde: Serde[Any] | None = None, name: str | None = None) -> "Stream":
        from kstreamlet.dsl.stream import KeyedStream

        keyed = isinstance(fn, KeyedBroadcastProcessFunction)
        if keyed and not isinstance(self._stream, KeyedStream):
            raise TypeError("a KeyedBroadcastProcessFunction needs a keyed stream: key_by(...).connect(b)")
        if not keyed and not isinstance(fn, BroadcastProcessFunction):
            raise TypeError("process() takes a BroadcastProcessFunction or KeyedBroadcastProcessFunction")
        app = self._stream._app
        node = BroadcastProcessNode(fn, self._broadcast, self._stream.key_serde if keyed else None,
                                    name or f"broadcast-{app._next_op_id()}")
        return self._stream._then(node, value_serde=output_serde)


__all__ = ["BroadcastStream", "BroadcastState", "BroadcastProcessFunction", "KeyedBroadcastProcessFunction",
           "BroadcastConnectedStream"]

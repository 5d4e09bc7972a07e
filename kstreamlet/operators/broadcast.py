"""The broadcast side of a connected stream: its context and how a broadcast element is handled.

The data side runs as a plain process function or, for a
:class:`~kstreamlet.api.functions.KeyedBroadcastProcessFunction`, as a keyed process function
(see :class:`kstreamlet.topology.broadcast.BroadcastProcessNode`). Broadcast elements arrive
through the task's broadcast handlers, with the broadcast state writable only during
``process_broadcast_element``.
"""

from __future__ import annotations

from typing import Any, Callable

from kstreamlet.api.context import BroadcastState, RuntimeContext
from kstreamlet.serdes import Serde
from kstreamlet.state.codec import key_of
from kstreamlet.state.keyed import StateDescriptor

Push = Callable[[Any, Any, int], None]


class BroadcastSideContext:
    """``ctx`` of ``process_broadcast_element``: the writable broadcast state, ``emit``, and (keyed)
    ``apply_to_keyed_state``."""

    def __init__(self, runtime: RuntimeContext, state: BroadcastState, forward: Push,
                 key_deserializer: Callable[[bytes], Any] | None) -> None:
        self._runtime = runtime
        self.broadcast_state = state
        self._forward = forward
        self._key_de = key_deserializer
        self.key: Any = None
        self.timestamp = 0

    def emit(self, value: Any, key: Any = None, timestamp: int | None = None) -> None:
        self._forward(key, value, self.timestamp if timestamp is None else timestamp)

    def apply_to_keyed_state(self, desc: StateDescriptor, fn: Callable[[Any, Any], None]) -> None:
        """Call ``fn(key, state)`` for every key that has a value in ``desc``'s state on this task."""
        store = self._runtime.raw_store(desc.name)
        keyctx = self._runtime.key_context
        state = self._runtime.state(desc)
        de = self._key_de or (lambda b: b)
        seen: set[bytes] = set()
        for k, _ in list(store.iter_range(b"", None)):
            kb = key_of(k)
            if kb in seen:
                continue
            seen.add(kb)
            keyctx.key_bytes = kb
            fn(de(kb), state)


def broadcast_handler(fn: Any, state: BroadcastState, ctx: BroadcastSideContext, key_serde: Serde[Any],
                      value_serde: Serde[Any]) -> Callable[[bytes | None, bytes | None, int], None]:
    """``on_broadcast(key, value, ts)`` for the task: deserializes and calls ``process_broadcast_element``
    with the broadcast state writable."""
    kde = key_serde.deserialize
    vde = value_serde.deserialize

    def on_broadcast(key: bytes | None, value: bytes | None, ts: int) -> None:
        state.writable = True
        try:
            ctx.key = kde(key) if key is not None else None
            ctx.timestamp = ts
            fn.process_broadcast_element(vde(value) if value is not None else None, ctx)
        finally:
            state.writable = False

    return on_broadcast


__all__ = ["BroadcastSideContext", "broadcast_handler"]

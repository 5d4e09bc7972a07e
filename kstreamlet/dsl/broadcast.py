"""Broadcast state: a low-throughput stream every instance sees whole.

    users = app.broadcast(source=MySQLPollingSource(...), name="user-info")   # or app.broadcast("rules-topic")
    events.connect(users).process(Enrich())

``process_element(value, ctx)`` sees ``ctx.broadcast_state`` read-only;
``process_broadcast_element(value, ctx)`` may write it. Keyed variant
(:class:`~kstreamlet.api.functions.KeyedBroadcastProcessFunction`, on a keyed stream) also has keyed
state and ``ctx.apply_to_keyed_state(descriptor, fn)`` on the broadcast side. How it runs:
:mod:`kstreamlet.topology.broadcast`.
"""

from __future__ import annotations

from typing import Any, Generic

from kstreamlet.dsl.handle import Handle, S
from kstreamlet.api.functions import BroadcastProcessFunction, KeyedBroadcastProcessFunction
from kstreamlet.serdes import Serde
from kstreamlet.topology.broadcast import BroadcastProcessNode
from kstreamlet.topology.builder import BroadcastSpec


class BroadcastStream(BroadcastSpec):
    """A broadcast input: ``app.broadcast(topic)`` or ``app.broadcast(source=..., name=...)``."""


class BroadcastConnectedStream(Generic[S]):
    """``stream.connect(broadcast)``: finish with ``.process(fn)``."""

    def __init__(self, stream: Handle[S], broadcast: BroadcastSpec) -> None:
        self._stream, self._broadcast = stream, broadcast

    def process(self, fn: BroadcastProcessFunction | KeyedBroadcastProcessFunction,
                output_serde: Serde[Any] | None = None, name: str | None = None) -> S:
        keyed = isinstance(fn, KeyedBroadcastProcessFunction)
        if keyed and not self._stream.is_keyed:
            raise TypeError("a KeyedBroadcastProcessFunction needs a keyed stream: key_by(...).connect(b)")
        if not keyed and not isinstance(fn, BroadcastProcessFunction):
            raise TypeError("process() takes a BroadcastProcessFunction or KeyedBroadcastProcessFunction")
        node = BroadcastProcessNode(fn, self._broadcast, self._stream.key_serde if keyed else None,
                                    name or self._stream._builder.generated_name("broadcast"))
        return self._stream._then(node, value_serde=output_serde)


__all__ = ["BroadcastStream", "BroadcastConnectedStream"]

"""The node of a connected broadcast stream (``stream.connect(broadcast).process(fn)``).

How it runs: the broadcast topic is not split among group members — every member
reads all of it (``read_committed``, from the beginning at start, catching up before it
processes data) and hands each element to every task connected to it. Broadcast state is
therefore a function of the broadcast topic and survives restarts by re-reading it (keep
the topic compacted; sources use a compacted internal topic). Elements from the broadcast
side are not part of a checkpoint: ``process_broadcast_element`` should update state, not emit.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from kstreamlet.api.context import BroadcastState, ProcessorContext, RuntimeContext
from kstreamlet.api.functions import KeyedBroadcastProcessFunction
from kstreamlet.operators.broadcast import BroadcastSideContext, broadcast_handler
from kstreamlet.serdes import Serde
from kstreamlet.topology.builder import BroadcastSpec
from kstreamlet.topology.nodes import KeyedProcessNode, Node, Push

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices


class BroadcastProcessNode(Node):
    """Data side of a connected stream; broadcast elements arrive through the task's handlers."""

    kind = "broadcast_process"

    def __init__(self, fn: Any, broadcast: BroadcastSpec, key_serde: Serde[Any] | None, name: str | None = None) -> None:
        super().__init__(name)
        self.fn = fn
        self.broadcast = broadcast
        self.key_serde = key_serde
        self.uses_event_time = key_serde is not None

    def store_name(self, state_name: str) -> str:
        return f"{self.name}-{state_name}"

    def compile(self, task: "TaskServices") -> Push:
        fn = copy.copy(self.fn)
        child = self.compile_children(task)
        state = BroadcastState()
        if isinstance(fn, KeyedBroadcastProcessFunction):
            assert self.key_serde is not None  # the DSL gives a keyed function the stream's key serde
            # The keyed operator gives keyed state, timers and key scoping; same name, same stores.
            inner = KeyedProcessNode(fn, self.key_serde, self.name)
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

        bctx = BroadcastSideContext(RuntimeContext(task, self), state, child,
                                    self.key_serde.deserialize if self.key_serde is not None else None)
        task.add_broadcast_handler(self.broadcast.topic,
                                   broadcast_handler(fn, state, bctx, self.broadcast.key_serde,
                                                     self.broadcast.value_serde))
        return data_push


__all__ = ["BroadcastProcessNode"]

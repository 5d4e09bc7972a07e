"""The user-facing API of operators: contexts, functions and the state wrappers they hand out.

``api/task.py`` is the contract between operators and the runtime (:class:`TaskServices`).
"""

from kstreamlet.api.context import (
    BroadcastState,
    KeyedContext,
    OperatorListState,
    ProcessorContext,
    RuntimeContext,
    UnionListState,
)
from kstreamlet.api.functions import (
    BroadcastContext,
    BroadcastProcessFunction,
    CoProcessFunction,
    KeyedBroadcastProcessFunction,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
)

__all__ = [
    "ProcessorContext", "KeyedContext", "RuntimeContext", "BroadcastState", "UnionListState", "OperatorListState",
    "KeyedProcessFunction", "CoProcessFunction", "KeyedCoProcessFunction", "BroadcastProcessFunction", "KeyedBroadcastProcessFunction", "BroadcastContext",
]

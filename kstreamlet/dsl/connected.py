"""Two streams connected into one function: ``a.connect(b).process(fn)``.

- Keyed (``a.key_by(k).connect(b.key_by(k))``): ``fn`` is a
  :class:`~kstreamlet.api.functions.KeyedCoProcessFunction` with keyed state and timers shared
  by both inputs. Both sides must be partitioned alike (``key_by`` on both sides, or
  co-partitioned topics read with ``keyed()``); their records meet in one task by key.
- Non-keyed: ``fn`` is a :class:`~kstreamlet.api.functions.CoProcessFunction` (no state, no
  timers). As with ``merge``, inputs read from different topics must have the same partition
  count (a task reads partition p of both).

Each record keeps its own key and timestamp; within a task the two inputs are processed in
timestamp order (as any task with several inputs).
"""

from __future__ import annotations

from typing import Any, Generic

from kstreamlet import serdes as _serdes
from kstreamlet.api.functions import CoProcessFunction, KeyedCoProcessFunction
from kstreamlet.dsl.handle import Handle, S
from kstreamlet.dsl.joins import tagged_union
from kstreamlet.operators.coprocess import co_process, keyed_co_process
from kstreamlet.serdes import Serde
from kstreamlet.topology.nodes import KeyedProcessNode, ProcessNode


class ConnectedStreams(Generic[S]):
    """``a.connect(b)``: finish with ``.process(fn)``."""

    def __init__(self, first: Handle[S], second: Handle[Any]) -> None:
        if first.is_keyed != second.is_keyed:
            raise TypeError("connect() needs two keyed streams (key_by both) or two unkeyed streams")
        self._first, self._second = first, second

    def process(self, fn: CoProcessFunction | KeyedCoProcessFunction, output_serde: Serde[Any] | str | None = None,
                name: str | None = None) -> S:
        """Run ``fn`` over both inputs; returns the stream of what it emits (JSON values unless
        ``output_serde``)."""
        first, second = self._first, self._second
        name = name or first._builder.generated_name("connect")
        union = tagged_union(first, second, name)
        out = _serdes.resolve(output_serde, _serdes.JSON)
        if first.is_keyed:
            if not isinstance(fn, KeyedCoProcessFunction):
                raise TypeError("connected keyed streams need a KeyedCoProcessFunction "
                                "(process_element1, process_element2, optional on_timer)")
            node = KeyedProcessNode(keyed_co_process(fn), union.key_serde, name)
            return union._then(node, value_serde=out)
        if isinstance(fn, KeyedCoProcessFunction) or not isinstance(fn, CoProcessFunction):
            raise TypeError("connected unkeyed streams need a CoProcessFunction (process_element1, process_element2); "
                            "key_by both streams for keyed state and timers (KeyedCoProcessFunction)")
        # The union's handle is only a place to hang the process node; its result is unkeyed.
        return union._then(ProcessNode(co_process(fn), name), value_serde=out)

"""A task: one sub-topology on one partition number.

It owns compiled copies of the sub-topology's nodes (so per-task state never leaks
between partitions) and turns each input message into calls down the node chain. With
several input topics (co-partitioned, ``merge``) it buffers per input and always
processes the buffered record with the smallest timestamp first.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Protocol

from kstreamlet.serdes import SerdeError
from kstreamlet.topology.builder import SubTopology
from kstreamlet.topology.nodes import Node, Push, SourceNode


class Message(Protocol):
    """The subset of ``confluent_kafka.Message`` a task reads (the test driver provides its own)."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...


class RecordCollector(Protocol):
    """Where sinks send serialized records (Kafka producer, or the test driver)."""

    def send(self, topic: str, key: bytes | None, value: bytes | None, timestamp: int, partition: int) -> None: ...


class DeserializationError(SerdeError):
    """An input record's key or value could not be deserialized."""


class Task:
    """Runs one sub-topology for one partition."""

    def __init__(self, subtopology: SubTopology, partition: int, collector: RecordCollector,
                 partitions_of: Callable[[str], int]) -> None:
        self.subtopology = subtopology
        self.partition = partition
        self.id = f"{subtopology.id}_{partition}"
        self.collector = collector
        self.partitions_of = partitions_of
        #: The message being processed (read by ProcessorContext).
        self.msg: Any = None
        self._compiled: dict[int, Push] = {}
        self.on_message: dict[str, Callable[[Message], None]] = {
            topic: self._compile_source(src) for topic, src in subtopology.sources.items()
        }
        self.multi_input = len(subtopology.sources) > 1
        self._queues: dict[str, deque[Message]] = {t: deque() for t in subtopology.sources}

    def compiled(self, node: Node) -> Push:
        """The node's push function for this task (compiled once)."""
        fn = self._compiled.get(node.id)
        if fn is None:
            fn = node.compile(self)
            self._compiled[node.id] = fn
        return fn

    def _compile_source(self, src: SourceNode) -> Callable[[Message], None]:
        child = self.compiled(src)
        kde = None if src.key_serde.identity else src.key_serde.deserialize
        vde = None if src.value_serde.identity else src.value_serde.deserialize
        task = self

        def on_message(m: Message) -> None:
            task.msg = m
            k = m.key()
            v = m.value()
            if kde is not None or vde is not None:
                try:
                    if kde is not None:
                        k = kde(k)  # type: ignore[arg-type]
                    if vde is not None:
                        v = vde(v)  # type: ignore[arg-type]
                except Exception as e:
                    raise DeserializationError(f"{type(e).__name__}: {e}") from e
            tstype, ts = m.timestamp()
            if tstype == 0:  # TIMESTAMP_NOT_AVAILABLE: fall back to wall-clock time
                ts = int(time.time() * 1000)
            child(k, v, ts)

        return on_message

    # --- co-partitioned inputs: pick by timestamp ---------------------------------------------

    def enqueue(self, m: Message) -> None:
        self._queues[m.topic()].append(m)

    def drain(self, process: Callable[[Message], None]) -> None:
        """Process every buffered record, always the one with the smallest timestamp next."""
        queues = [q for q in self._queues.values()]
        while True:
            best: deque[Message] | None = None
            best_ts = 0
            for q in queues:
                if q:
                    ts = q[0].timestamp()[1]
                    if best is None or ts < best_ts:
                        best, best_ts = q, ts
            if best is None:
                return
            process(best.popleft())

    def clear_buffers(self) -> None:
        for q in self._queues.values():
            q.clear()

"""Reading whole topics: the broadcast inputs every member reads in full, and the union read
of every partition of a changelog (union list state).

:func:`read_to_end` is the one "assign from the beginning, consume until each partition's
end offset as of the start" loop both use.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kstreamlet.errors import TopologyError
from kstreamlet.runtime.topics import end_offset

log = structlog.get_logger("kstreamlet.broadcast")

#: A broadcast element: (topic, raw key, raw value, timestamp).
BroadcastRecord = tuple[str, "bytes | None", "bytes | None", int]


def end_offsets(consumer: Consumer, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """High watermarks (read_committed: last stable offsets) of ``tps``, asked of the broker; a
    partition whose leader is moving, or of a topic just created, is retried (:func:`end_offset`)."""
    return {(t, p): end_offset(consumer, t, p) for t, p in tps}


def read_to_end(consumer: Consumer, ends: dict[tuple[str, int], int], on_message: Callable[[Any], None],
                timeout: float, assign: bool = True) -> set[tuple[str, int]]:
    """Consume ``consumer`` until every partition in ``ends`` reached its end offset (or
    ``timeout``); each record goes to ``on_message``. Returns the partitions not finished."""
    todo = {tp for tp, end in ends.items() if end > 0}
    if assign and todo:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in todo])
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.2):
            if m.error() is None:
                on_message(m)
        for pos in consumer.position([TopicPartition(t, p) for t, p in todo]):
            if pos.offset >= ends[(pos.topic, pos.partition)]:
                todo.discard((pos.topic, pos.partition))
    return todo


def _element(m: Any) -> BroadcastRecord:
    return (m.topic(), m.key(), m.value(), m.timestamp()[1])


class BroadcastReader:
    """Reads every partition of the broadcast topics, from the beginning, on every member.

    :meth:`load` catches up before the member processes data (so the data side sees the
    broadcast state as of start); :meth:`poll` returns what arrived since. The reader keeps
    nothing: the task manager keeps every element, so a task created later (a rebalance)
    replays them first."""

    def __init__(self, make_consumer: Callable[[dict[str, Any]], Consumer], config: dict[str, Any],
                 application_id: str, topics: list[str], partitions_of: Callable[[str], int]) -> None:
        self.topics = topics
        self.consumer: Consumer | None = None
        if topics:
            self.consumer = make_consumer({**config, "group.id": f"{application_id}-broadcast",
                                           "enable.auto.commit": False, "isolation.level": "read_committed",
                                           "enable.partition.eof": False})
        self._partitions_of = partitions_of

    def load(self, timeout: float = 60.0) -> list[BroadcastRecord]:
        c = self.consumer
        if c is None:
            return []
        tps = [(t, p) for t in self.topics for p in range(self._partitions_of(t))]
        ends = end_offsets(c, tps)
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in tps])
        loaded: list[BroadcastRecord] = []
        read_to_end(c, ends, lambda m: loaded.append(_element(m)), timeout, assign=False)
        log.info("broadcast inputs loaded", topics=self.topics, records=len(loaded))
        return loaded

    def poll(self, timeout: float = 0.0) -> list[BroadcastRecord]:
        """Elements that arrived since the last call."""
        if self.consumer is None:
            return []
        return [_element(m) for m in self.consumer.consume(1000, timeout) if m.error() is None]

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def read_all_partitions(make_consumer: Callable[[dict[str, Any]], Consumer], config: dict[str, Any],
                        application_id: str, topic: str, partitions: int,
                        timeout: float = 60.0) -> dict[int, dict[bytes, bytes]]:
    """Latest committed value per key of every partition of a changelog (union list state)."""
    c = make_consumer({**config, "group.id": f"{application_id}-union",
                       "enable.auto.commit": False, "isolation.level": "read_committed"})
    out: dict[int, dict[bytes, bytes]] = {p: {} for p in range(partitions)}

    def on_message(m: Any) -> None:
        if m.value() is None:
            out[m.partition()].pop(m.key(), None)
        else:
            out[m.partition()][m.key()] = m.value()

    try:
        left = read_to_end(c, end_offsets(c, [(topic, p) for p in range(partitions)]), on_message, timeout)
        if left:
            raise TopologyError(f"could not read changelog {topic} partitions {sorted(p for _, p in left)} "
                                f"in {timeout}s")
        return out
    finally:
        c.close()

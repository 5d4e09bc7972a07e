"""Fakes shared by the unit tests of the runtime (a consumed Kafka message)."""

from __future__ import annotations

from confluent_kafka import KafkaError


class Msg:
    """Looks like a ``confluent_kafka.Message`` to the task manager and a task."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None = b"v",
                 error: KafkaError | None = None, timestamp: int | None = None) -> None:
        self._t, self._p, self._o, self._v, self._e = topic, partition, offset, value, error
        self._ts = 1_000 + offset if timestamp is None else timestamp

    def error(self) -> KafkaError | None:
        return self._e

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return b"k"

    def value(self) -> bytes | None:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None

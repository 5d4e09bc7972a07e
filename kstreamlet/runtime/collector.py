"""The record collector: the one object tasks, stores, the dead-letter handler and watermark
forwarding produce through (Kafka Streams' ``RecordCollector``).

One collector per producer: when the member rebuilds its clients it makes a new collector,
and the tasks built afterwards hold the new one. What the broker would reject (size,
timestamp, partition) is caught before ``produce`` as a :class:`RecordProductionError` of the
record (runtime/production.py); a full local queue is waited out within the transaction
timeout, then the checkpoint aborts; at-least-once delivery errors are kept for the commit.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from kstreamlet.errors import RecordProductionError
from kstreamlet.runtime.checkpoint import AbortCheckpoint
from kstreamlet.runtime.production import OutputLimits, per_record_error, record_size

Headers = list[tuple[str, bytes]]


class RecordCollector:
    """Serialized records into the producer (inside the current transaction under EOS)."""

    def __init__(self, producer: Producer, limits: OutputLimits, queue_timeout: float) -> None:
        self.producer = producer
        self.limits = limits
        #: How long a full producer queue is waited out before the checkpoint aborts.
        self.queue_timeout = queue_timeout
        #: At-least-once: the first delivery error since the last commit (the commit aborts on it).
        self.delivery_failed: KafkaError | None = None
        #: The dead-letter handler (runtime/dlq.py) failing timer calls are handed to; set by the member.
        self.errors: Any = None
        #: Topic -> watermark records sent (librdkafka counts them as produced; records out does not).
        self.watermarks_sent: dict[str, int] = {}
        #: Changelog records and bytes (key + value) sent since the last checkpoint (its state size).
        self.state_records = 0
        self.state_bytes = 0
        self.send = self._bind_send()

    def _bind_send(self) -> Callable[..., None]:
        """The per-record ``send(topic, key, value, timestamp, partition)``: a closure over the
        producer and the limits' fast bounds (updated in place when the limits change)."""
        produce = self.producer.produce
        limits = self.limits
        check = limits.check
        max_bytes, max_ts, min_partitions, min_ts = limits.fast

        def bounds(b: int, hi: int, parts: int, lo: int) -> None:
            nonlocal max_bytes, max_ts, min_partitions, min_ts
            max_bytes, max_ts, min_partitions, min_ts = b, hi, parts, lo

        limits.on_change = bounds
        slow = self.produce

        def send(topic: str, key: bytes | None, value: bytes | None, ts: int, partition: int,
                 headers: Any = None) -> None:
            # What the broker would reject is a RecordProductionError of this record (the error
            # policy handles its input record), caught before produce: runtime/production.py.
            try:
                n = len(value) + len(key)  # type: ignore[arg-type]
            except TypeError:  # a None key or value (tombstone)
                n = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
            if headers:
                n += record_size(None, None, headers)
            if n > max_bytes or ts > max_ts or ts < min_ts or partition >= min_partitions:
                check(topic, key, value, ts, partition, headers)
            try:
                try:
                    if headers:
                        produce(topic, value, key, partition, timestamp=ts, headers=headers)
                    else:
                        produce(topic, value, key, partition, timestamp=ts)
                except BufferError:
                    slow(topic, value, key, partition, timestamp=ts, headers=headers)
            except KafkaException as e:
                err = per_record_error(e)
                if err is None:
                    raise
                raise RecordProductionError(topic, err.name(), f"{err.str()} (record of {n} bytes)") from e

        return send

    def produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int = -1, **kw: Any) -> None:
        """``producer.produce``, serving delivery reports while the local queue is full."""
        producer = self.producer
        deadline = 0.0
        while True:
            try:
                producer.produce(topic, value, key, partition, **kw)
                return
            except BufferError:
                # The queue drains only while brokers take records: past the transaction timeout
                # the checkpoint cannot commit anyway, so abort it instead of waiting forever.
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.queue_timeout
                elif now > deadline:
                    raise AbortCheckpoint(f"producer queue full for {self.queue_timeout:.0f}s "
                                          "(brokers unreachable?)") from None
                producer.poll(0.05)

    def send_watermark(self, topic: str, partition: int, key: bytes, ts: int, headers: Headers) -> None:
        """A watermark record to one partition of a repartition topic (inside the checkpoint)."""
        self.produce(topic, None, key, partition, timestamp=ts, headers=headers)
        self.watermarks_sent[topic] = self.watermarks_sent.get(topic, 0) + 1

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None, ts: int, headers: Headers) -> None:
        """A dead-letter record; one too large for its topic is cut to fit, with a header saying so."""
        key, value, headers = self.limits.fit(topic, key, value, headers)
        self.produce(topic, value, key, timestamp=ts, headers=headers)

    def send_changelog(self, topic: str, key: bytes, value: bytes | None, partition: int, on_delivery: Any) -> None:
        """A store's changelog record (``on_delivery``: at-least-once stores learn its offset)."""
        self.state_records += 1
        self.state_bytes += len(key) + (len(value) if value is not None else 0)
        if on_delivery is None:
            self.produce(topic, value, key, partition)
        else:
            self.produce(topic, value, key, partition, on_delivery=on_delivery)

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        """At-least-once delivery reports (errors only): the commit aborts on the first one."""
        if err is not None:
            self.delivery_failed = err
            if err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
                # The checkpoint aborts; learning the size makes the replay hand this record to the
                # error policy before producing it (runtime/production.py).
                self.limits.learn(msg.topic(), record_size(msg.key(), msg.value(), msg.headers()))

    def poll(self) -> None:
        """Serve delivery reports (once per batch)."""
        self.producer.poll(0)

"""Event time: timestamp assignment and watermark strategies (Flink's ``WatermarkStrategy``).

Example::

    strategy = (WatermarkStrategy.for_bounded_out_of_orderness(ms=2000)
                .with_timestamp_assigner(lambda order: order["ts"])
                .with_idleness(ms=5000))
    orders = app.stream("orders", value_serde=serdes.JSON, watermarks=strategy)

A task's watermark is the minimum over its inputs (the partitions of its co-partitioned
source topics); an input that has been silent longer than the idleness timeout — also one
that never had a record — does not hold it back, and when every input is idle the watermark
catches up with the largest timestamp seen minus one, ignoring the out-of-orderness bound (so
the last windows of a quiet stream still close, on processing-time ticks, without waiting for
new records). Idleness crosses repartition topics: an idle upstream task (e.g. of an empty
input partition) tells the tasks after ``key_by`` to ignore it. An idle input that becomes
active again never moves the watermark back (its older records are late). Without
``with_idleness`` an input without records holds the watermark back for ever, as in Flink.
Each input's watermark is ``max timestamp seen - out_of_orderness - 1``.
Without a strategy a source uses monotonous timestamps (watermark = max seen - 1): a
record older than an earlier one is late.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

#: Watermark before any record was seen.
MIN_WATERMARK = -(2**63)


@dataclass(frozen=True)
class WatermarkStrategy:
    """How timestamps are taken and how far the watermark trails them."""

    out_of_orderness_ms: int = 0
    timestamp_assigner: Callable[[Any], int] | None = None
    idleness_ms: int | None = None

    @classmethod
    def for_bounded_out_of_orderness(cls, ms: int) -> "WatermarkStrategy":
        if ms < 0:
            raise ValueError("out-of-orderness must be >= 0 ms")
        return cls(out_of_orderness_ms=ms)

    @classmethod
    def for_monotonous_timestamps(cls) -> "WatermarkStrategy":
        return cls(out_of_orderness_ms=0)

    def with_timestamp_assigner(self, fn: Callable[[Any], int]) -> "WatermarkStrategy":
        """``fn(value) -> epoch ms`` replaces the Kafka record timestamp as event time."""
        return replace(self, timestamp_assigner=fn)

    def with_idleness(self, ms: int) -> "WatermarkStrategy":
        """An input silent for ``ms`` of processing time (or without any record for ``ms`` after its
        task started) stops holding the watermark back, also downstream of repartition topics."""
        if ms <= 0:
            raise ValueError("idleness must be > 0 ms")
        return replace(self, idleness_ms=ms)

"""Event time: timestamp assignment and watermark strategies (Flink's ``WatermarkStrategy``).

Example::

    strategy = (WatermarkStrategy.for_bounded_out_of_orderness(timedelta(seconds=2))
                .with_timestamp_assigner(lambda order: order["ts"])
                .with_idleness(5000))   # milliseconds or a datetime.timedelta, everywhere
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
Without a strategy a source uses monotonous timestamps (watermark = max seen - 1): an
element is late when its timestamp is below the watermark (``ts < watermark``), so a record
more than 1 ms older than the newest one is late (docs/semantics.md, "Lateness").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Callable, Union

#: Watermark before any record was seen.
MIN_WATERMARK = -(2**63)

#: A duration: milliseconds (int) or a :class:`datetime.timedelta`, accepted wherever the API
#: takes a number of milliseconds (window sizes, gaps, lateness, join bounds, idleness, TTL).
Duration = Union[int, timedelta]


def to_millis(d: Duration, what: str = "duration") -> int:
    """Milliseconds of ``d`` (an int is taken as milliseconds; a timedelta is converted, rounding
    sub-millisecond parts down). Anything else is a TypeError naming ``what``."""
    if isinstance(d, timedelta):
        return d // timedelta(milliseconds=1)
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"{what} must be milliseconds (int) or a datetime.timedelta, not {type(d).__name__} {d!r}")
    return d


@dataclass(frozen=True)
class WatermarkStrategy:
    """How timestamps are taken and how far the watermark trails them."""

    out_of_orderness_ms: int = 0
    timestamp_assigner: Callable[[Any], int] | None = None
    idleness_ms: int | None = None

    @classmethod
    def for_bounded_out_of_orderness(cls, ms: Duration) -> "WatermarkStrategy":
        n = to_millis(ms, "out-of-orderness")
        if n < 0:
            raise ValueError("out-of-orderness must be >= 0 ms")
        return cls(out_of_orderness_ms=n)

    @classmethod
    def for_monotonous_timestamps(cls) -> "WatermarkStrategy":
        return cls(out_of_orderness_ms=0)

    def with_timestamp_assigner(self, fn: Callable[[Any], int]) -> "WatermarkStrategy":
        """``fn(value) -> epoch ms`` replaces the Kafka record timestamp as event time."""
        return replace(self, timestamp_assigner=fn)

    def with_idleness(self, ms: Duration) -> "WatermarkStrategy":
        """An input silent for ``ms`` of processing time (or without any record for ``ms`` after its
        task started) stops holding the watermark back, also downstream of repartition topics."""
        n = to_millis(ms, "idleness")
        if n <= 0:
            raise ValueError("idleness must be > 0 ms")
        return replace(self, idleness_ms=n)

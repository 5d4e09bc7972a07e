"""Window triggers: when a window emits (value types, used by ``WindowedStream.trigger``)."""

from __future__ import annotations

from dataclasses import dataclass

from kstreamlet.eventtime import Duration, to_millis


@dataclass(frozen=True)
class Trigger:
    """When a window emits.

    ``kind``: ``time`` (default: at the window's end), ``count`` (Flink's ``CountTrigger``: fires
    when ``count`` elements arrived since the last firing, instead of time; the contents are
    kept, the count is cleared; merged windows add their counts), ``continuous`` (Flink's
    ``ContinuousEventTimeTrigger``: at the end, and early every ``interval_ms`` from the first
    element, ``ts - ts % interval + interval``; merged windows take the earliest next firing).
    """

    kind: str = "time"
    count: int = 0
    interval_ms: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("time", "count", "continuous"):
            raise ValueError(f"trigger kind must be 'time', 'count' or 'continuous', got {self.kind!r}")
        if self.kind == "count" and self.count <= 0:
            raise ValueError(f"count trigger count must be > 0, got {self.count}")
        if self.kind == "continuous" and self.interval_ms <= 0:
            raise ValueError(f"continuous trigger interval must be > 0 ms, got {self.interval_ms}")


class CountTrigger:
    @staticmethod
    def of(n: int) -> Trigger:
        if n <= 0:
            raise ValueError("count must be > 0")
        return Trigger("count", count=n)


class ContinuousEventTimeTrigger:
    """Early firings every ``interval_ms`` of event time, plus the final one."""

    @staticmethod
    def of(interval_ms: Duration) -> Trigger:
        """``interval_ms``: milliseconds or a ``datetime.timedelta``."""
        iv = to_millis(interval_ms, "continuous trigger interval")
        if iv <= 0:
            raise ValueError(f"continuous trigger interval must be > 0 ms, got {iv}")
        return Trigger("continuous", interval_ms=iv)


__all__ = ["Trigger", "CountTrigger", "ContinuousEventTimeTrigger"]

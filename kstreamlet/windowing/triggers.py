"""Window triggers: when a window emits (value types, used by ``WindowedStream.trigger``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trigger:
    """When a window emits.

    ``kind``: ``time`` (default: at the window's end), ``count`` (every ``count`` elements,
    instead of time), ``continuous`` (at the end and early every ``interval_ms``).
    """

    kind: str = "time"
    count: int = 0
    interval_ms: int = 0


class CountTrigger:
    @staticmethod
    def of(n: int) -> Trigger:
        if n <= 0:
            raise ValueError("count must be > 0")
        return Trigger("count", count=n)


class ContinuousEventTimeTrigger:
    """Early firings every ``interval_ms`` of event time, plus the final one."""

    @staticmethod
    def of(interval_ms: int) -> Trigger:
        if interval_ms <= 0:
            raise ValueError("interval must be > 0 ms")
        return Trigger("continuous", interval_ms=interval_ms)


__all__ = ["Trigger", "CountTrigger", "ContinuousEventTimeTrigger"]

"""Window triggers: when a window emits (value types, used by ``WindowedStream.trigger``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    #: ``PurgingTrigger``: every FIRE becomes FIRE_AND_PURGE (the contents are cleared after it).
    purge: bool = False
    #: ``"event"`` / ``"processing"`` for ``EventTimeTrigger`` / ``ProcessingTimeTrigger``: the
    #: window assigner must be of that time domain; ``None``: the assigner's.
    domain: str | None = None

    def __post_init__(self) -> None:
        if self.domain not in (None, "event", "processing"):
            raise ValueError(f"trigger domain must be 'event' or 'processing', got {self.domain!r}")
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


class EventTimeTrigger:
    """Fires a window once the watermark passes its end, and on each element within the allowed
    lateness after that (Flink's ``EventTimeTrigger``, the default of event-time windows)."""

    @staticmethod
    def create() -> Trigger:
        return Trigger("time", domain="event")


class ProcessingTimeTrigger:
    """Fires a window once the processing time passes its end (Flink's ``ProcessingTimeTrigger``,
    the default of processing-time windows)."""

    @staticmethod
    def create() -> Trigger:
        return Trigger("time", domain="processing")


class PurgingTrigger:
    """``PurgingTrigger.of(trigger)``: ``trigger``'s firings also purge the window contents (Flink's
    FIRE_AND_PURGE); the trigger's own state and timers are kept, the window stays until cleanup."""

    @staticmethod
    def of(trigger: Trigger) -> Trigger:
        if not isinstance(trigger, Trigger):
            raise TypeError(f"PurgingTrigger.of takes a Trigger, not {type(trigger).__name__}")
        return replace(trigger, purge=True)


__all__ = ["Trigger", "CountTrigger", "ContinuousEventTimeTrigger", "EventTimeTrigger", "ProcessingTimeTrigger",
           "PurgingTrigger"]

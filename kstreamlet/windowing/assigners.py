"""Window assigners (Flink's ``WindowAssigner``): which windows an element belongs to.

All sizes are milliseconds (an ``int``) or a ``datetime.timedelta`` (:func:`kstreamlet.eventtime.to_millis`). Windows are half-open ``[start, end)``; a window's last
timestamp (``max_timestamp``) is ``end - 1``, the time its event-time timer fires at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kstreamlet.eventtime import Duration, to_millis
from kstreamlet.state.codec import MAX_TIMESTAMP, MIN_TIMESTAMP, saturating_add


@dataclass(frozen=True, order=True)
class TimeWindow:
    start: int
    end: int

    @property
    def max_timestamp(self) -> int:
        return self.end - 1

    def intersects(self, other: "TimeWindow") -> bool:
        # Touching windows intersect (Flink's TimeWindow.intersects): sessions [0,1) and [1,2) merge.
        return self.start <= other.end and other.start <= self.end

    def cover(self, other: "TimeWindow") -> "TimeWindow":
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))


@dataclass(frozen=True, order=True)
class GlobalWindow(TimeWindow):
    """The one window of :class:`GlobalWindows` (Flink's ``GlobalWindow``): from the beginning to
    the end of time, ``max_timestamp`` is ``MAX_TIMESTAMP`` (``Long.MAX_VALUE``)."""

    start: int = MIN_TIMESTAMP
    end: int = MAX_TIMESTAMP

    @property
    def max_timestamp(self) -> int:
        return MAX_TIMESTAMP


#: The global window (there is one: each key has its own contents in it).
GLOBAL_WINDOW = GlobalWindow()


def _window_start(ts: int, offset: int, size: int) -> int:
    return ts - ((ts - offset) % size)


@dataclass(frozen=True)
class WindowAssigner:
    event_time: bool = True
    merging: bool = False

    def assign(self, ts: int) -> list[TimeWindow]:  # pragma: no cover - every assigner overrides
        raise TypeError(type(self).__name__)

    def assign_element(self, value: Any, ts: int) -> list[TimeWindow]:
        """The windows of ``value`` at ``ts`` (Flink's ``assignWindows(element, timestamp, ...)``);
        only the dynamic-gap session assigner looks at the value."""
        return self.assign(ts)


@dataclass(frozen=True)
class TumblingWindows(WindowAssigner):
    size: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        # As Flink's TumblingEventTimeWindows: size > 0 and abs(offset) < size.
        _positive("size", self.size)
        if abs(self.offset) >= self.size:
            raise ValueError(f"tumbling window offset must satisfy |offset| < size ({self.size} ms), "
                             f"i.e. -{self.size} < offset < {self.size}; got offset {self.offset}")

    def assign(self, ts: int) -> list[TimeWindow]:
        start = _window_start(ts, self.offset, self.size)
        end = start + self.size  # saturating_add, inlined
        return [TimeWindow(start, end if end <= MAX_TIMESTAMP else MAX_TIMESTAMP)]


@dataclass(frozen=True)
class SlidingWindows(WindowAssigner):
    size: int = 0
    slide: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        # As Flink's SlidingEventTimeWindows: size > 0, slide > 0 and abs(offset) < slide.
        _positive("size", self.size)
        _positive("slide", self.slide)
        if abs(self.offset) >= self.slide:
            raise ValueError(f"sliding window offset must satisfy |offset| < slide ({self.slide} ms), "
                             f"i.e. -{self.slide} < offset < {self.slide}; got offset {self.offset}")

    def assign(self, ts: int) -> list[TimeWindow]:
        out = []
        size = self.size
        start = _window_start(ts, self.offset, self.slide)
        while start > ts - size:
            end = start + size  # saturating_add, inlined (only the first window can end past int64)
            out.append(TimeWindow(start, end if end <= MAX_TIMESTAMP else MAX_TIMESTAMP))
            start -= self.slide
        return out


@dataclass(frozen=True)
class SessionWindows(WindowAssigner):
    """Sessions ``[ts, ts + gap)``; with ``gap_extractor`` the gap is ``gap_extractor(value)`` per
    element (Flink's ``DynamicEventTimeSessionWindows`` with a ``SessionWindowTimeGapExtractor``)."""

    gap: int = 0
    gap_extractor: Callable[[Any], Duration] | None = None

    def __post_init__(self) -> None:
        if self.gap_extractor is None:
            _positive("gap", self.gap)
        elif not callable(self.gap_extractor):
            raise TypeError(f"session gap extractor must be callable, got {self.gap_extractor!r}")

    def assign(self, ts: int) -> list[TimeWindow]:
        if self.gap_extractor is not None:
            raise TypeError("a dynamic-gap session assigner needs the element: use assign_element(value, ts)")
        return [TimeWindow(ts, saturating_add(ts, self.gap))]

    def assign_element(self, value: Any, ts: int) -> list[TimeWindow]:
        fn = self.gap_extractor
        if fn is None:
            return [TimeWindow(ts, saturating_add(ts, self.gap))]
        name = getattr(fn, "__qualname__", None) or repr(fn)
        gap = to_millis(fn(value), f"session gap from extractor {name}")
        if gap <= 0:
            # As Flink's DynamicEventTimeSessionWindows: "Dynamic session time gap must satisfy 0 < gap".
            raise ValueError(f"dynamic session gap must be > 0 ms: gap extractor {name} returned {gap} "
                             f"for value {value!r}")
        return [TimeWindow(ts, saturating_add(ts, gap))]


@dataclass(frozen=True)
class GlobalWindowAssigner(WindowAssigner):
    """Every element in :data:`GLOBAL_WINDOW` (Flink's ``GlobalWindows``). As in Flink it is not an
    event-time assigner: nothing is late, there is no cleanup (the window lives as long as its key
    has state), and a trigger must say when it fires (the default, :class:`NeverTrigger`, never does)."""

    event_time: bool = False
    merging: bool = False

    def assign(self, ts: int) -> list[TimeWindow]:
        return [GLOBAL_WINDOW]


class GlobalWindows:
    """One window per key for all time: ``keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(100))``."""

    @staticmethod
    def create() -> GlobalWindowAssigner:
        return GlobalWindowAssigner()


def _positive(name: str, d: Duration) -> int:
    v = to_millis(d, f"window {name}")
    if v <= 0:
        raise ValueError(f"window {name} must be > 0 ms, got {v}")
    return int(v)


class TumblingEventTimeWindows:
    """Fixed, non-overlapping event-time windows: ``TumblingEventTimeWindows.of(5000)``."""

    @staticmethod
    def of(size_ms: Duration, offset_ms: Duration = 0) -> TumblingWindows:
        return TumblingWindows(event_time=True, size=_positive("size", size_ms), offset=to_millis(offset_ms, "window offset"))


class TumblingProcessingTimeWindows:
    @staticmethod
    def of(size_ms: Duration, offset_ms: Duration = 0) -> TumblingWindows:
        return TumblingWindows(event_time=False, size=_positive("size", size_ms), offset=to_millis(offset_ms, "window offset"))


class SlidingEventTimeWindows:
    """Overlapping windows of ``size`` every ``slide``: ``SlidingEventTimeWindows.of(2000, 1000)``."""

    @staticmethod
    def of(size_ms: Duration, slide_ms: Duration, offset_ms: Duration = 0) -> SlidingWindows:
        return SlidingWindows(event_time=True, size=_positive("size", size_ms), slide=_positive("slide", slide_ms),
                              offset=to_millis(offset_ms, "window offset"))


class SlidingProcessingTimeWindows:
    @staticmethod
    def of(size_ms: Duration, slide_ms: Duration, offset_ms: Duration = 0) -> SlidingWindows:
        return SlidingWindows(event_time=False, size=_positive("size", size_ms), slide=_positive("slide", slide_ms),
                              offset=to_millis(offset_ms, "window offset"))


class EventTimeSessionWindows:
    """Sessions split by a gap of inactivity; windows merge as elements arrive."""

    @staticmethod
    def with_gap(gap_ms: Duration) -> SessionWindows:
        return SessionWindows(event_time=True, merging=True, gap=_positive("gap", gap_ms))

    @staticmethod
    def with_dynamic_gap(extractor: Callable[[Any], Duration]) -> SessionWindows:
        """Sessions whose gap is ``extractor(value)`` (ms or timedelta, > 0) for each element
        (Flink's ``DynamicEventTimeSessionWindows.withDynamicGap``)."""
        return SessionWindows(event_time=True, merging=True, gap_extractor=extractor)


class ProcessingTimeSessionWindows:
    @staticmethod
    def with_gap(gap_ms: Duration) -> SessionWindows:
        return SessionWindows(event_time=False, merging=True, gap=_positive("gap", gap_ms))

    @staticmethod
    def with_dynamic_gap(extractor: Callable[[Any], Duration]) -> SessionWindows:
        """Processing-time sessions whose gap is ``extractor(value)`` (Flink's
        ``DynamicProcessingTimeSessionWindows``)."""
        return SessionWindows(event_time=False, merging=True, gap_extractor=extractor)

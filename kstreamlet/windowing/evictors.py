"""Window evictors (Flink's ``Evictor``): remove elements from a window before and/or after its
window function runs.

With ``.evictor(e)`` on a windowed stream the window keeps all its elements (each with its
timestamp, a :class:`TimestampedValue`); at each firing ``evict_before`` may remove some, the
window function (``reduce``, ``aggregate``, ``process``, ...) runs over the rest, then
``evict_after`` may remove more, and what is left stays in the window (Flink's
``EvictingWindowOperator``). Evictors remove elements from the ``elements`` list in place::

    class DropNegatives(Evictor):
        def evict_before(self, elements, size, window, ctx):
            elements[:] = [e for e in elements if e.value >= 0]

Durations are milliseconds or ``datetime.timedelta`` (:func:`kstreamlet.eventtime.to_millis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from kstreamlet.eventtime import Duration, to_millis

if TYPE_CHECKING:
    from kstreamlet.windowing.assigners import TimeWindow


@dataclass(frozen=True)
class TimestampedValue:
    """A window element with its timestamp (Flink's ``TimestampedValue``)."""

    value: Any
    timestamp: int


class EvictorContext(Protocol):
    """``ctx`` of an evictor's methods (Flink's ``Evictor.EvictorContext``)."""

    @property
    def current_watermark(self) -> int: ...
    @property
    def current_processing_time(self) -> int: ...


class Evictor:
    """Base class of evictors: override ``evict_before`` and/or ``evict_after``; each gets the
    window's elements (a list of :class:`TimestampedValue` in arrival order, to change in place),
    their number ``size``, the window and an :class:`EvictorContext`."""

    def evict_before(self, elements: list[TimestampedValue], size: int, window: "TimeWindow",
                     ctx: EvictorContext) -> None:
        return None

    def evict_after(self, elements: list[TimestampedValue], size: int, window: "TimeWindow",
                    ctx: EvictorContext) -> None:
        return None


class _BeforeOrAfter(Evictor):
    def __init__(self, do_evict_after: bool) -> None:
        self.do_evict_after = do_evict_after

    def evict_before(self, elements: list[TimestampedValue], size: int, window: "TimeWindow",
                     ctx: EvictorContext) -> None:
        if not self.do_evict_after:
            self._evict(elements, size)

    def evict_after(self, elements: list[TimestampedValue], size: int, window: "TimeWindow",
                    ctx: EvictorContext) -> None:
        if self.do_evict_after:
            self._evict(elements, size)

    def _evict(self, elements: list[TimestampedValue], size: int) -> None:  # pragma: no cover - overridden
        raise TypeError(type(self).__name__)


class CountEvictor(_BeforeOrAfter):
    """Keeps the last ``max_count`` elements (Flink's ``CountEvictor``)."""

    def __init__(self, max_count: int, do_evict_after: bool = False) -> None:
        if max_count <= 0:
            raise ValueError(f"count evictor count must be > 0, got {max_count}")
        super().__init__(do_evict_after)
        self.max_count = max_count

    @staticmethod
    def of(max_count: int, do_evict_after: bool = False) -> "CountEvictor":
        """Before the window function (or after it, with ``do_evict_after``), keep only the last
        ``max_count`` elements."""
        return CountEvictor(max_count, do_evict_after)

    def _evict(self, elements: list[TimestampedValue], size: int) -> None:
        if size > self.max_count:
            del elements[:size - self.max_count]


class TimeEvictor(_BeforeOrAfter):
    """Keeps the elements of the last ``window_size`` ms before the newest element's timestamp
    (Flink's ``TimeEvictor``): those with ``timestamp <= max timestamp - window_size`` are removed."""

    def __init__(self, window_size: Duration, do_evict_after: bool = False) -> None:
        size = to_millis(window_size, "time evictor window size")
        if size < 0:
            raise ValueError(f"time evictor window size must be >= 0 ms, got {size}")
        super().__init__(do_evict_after)
        self.window_size = size

    @staticmethod
    def of(window_size: Duration, do_evict_after: bool = False) -> "TimeEvictor":
        return TimeEvictor(window_size, do_evict_after)

    def _evict(self, elements: list[TimestampedValue], size: int) -> None:
        if not elements:
            return
        cutoff = max(e.timestamp for e in elements) - self.window_size
        elements[:] = [e for e in elements if e.timestamp > cutoff]


class DeltaEvictor(_BeforeOrAfter):
    """Removes the elements whose ``delta_fn(element, last element) >= threshold`` (Flink's
    ``DeltaEvictor``; the last element itself stays when ``delta_fn(x, x) < threshold``)."""

    def __init__(self, threshold: float, delta_fn: Callable[[Any, Any], float], do_evict_after: bool = False) -> None:
        if not callable(delta_fn):
            raise TypeError(f"delta evictor needs a callable delta function, got {delta_fn!r}")
        super().__init__(do_evict_after)
        self.threshold = threshold
        self.delta_fn = delta_fn

    @staticmethod
    def of(threshold: float, delta_fn: Callable[[Any, Any], float], do_evict_after: bool = False) -> "DeltaEvictor":
        return DeltaEvictor(threshold, delta_fn, do_evict_after)

    def _evict(self, elements: list[TimestampedValue], size: int) -> None:
        if not elements:
            return
        last = elements[-1].value
        elements[:] = [e for e in elements if self.delta_fn(e.value, last) < self.threshold]


__all__ = ["Evictor", "EvictorContext", "TimestampedValue", "CountEvictor", "TimeEvictor", "DeltaEvictor"]

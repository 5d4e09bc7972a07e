"""Per-task watermark: the minimum over the task's active inputs."""

from __future__ import annotations

from kstreamlet.eventtime import MIN_WATERMARK, WatermarkStrategy


class _Input:
    __slots__ = ("bound", "idleness", "max_ts", "last_active")

    def __init__(self, strategy: WatermarkStrategy, now: int) -> None:
        self.bound = strategy.out_of_orderness_ms
        self.idleness = strategy.idleness_ms
        self.max_ts = MIN_WATERMARK
        self.last_active = now


class WatermarkTracker:
    """Tracks max timestamps per input and derives the task watermark (never decreasing)."""

    def __init__(self, strategies: dict[str, WatermarkStrategy], now: int) -> None:
        self.inputs = {topic: _Input(s, now) for topic, s in strategies.items()}
        self.watermark = MIN_WATERMARK
        self._single = next(iter(self.inputs.values())) if len(self.inputs) == 1 else None

    def observe(self, topic: str, ts: int, now: int) -> int:
        """Record a timestamp; returns the (possibly advanced) watermark."""
        single = self._single
        if single is not None:
            single.last_active = now
            if ts > single.max_ts:
                single.max_ts = ts
                wm = ts - single.bound - 1
                if wm > self.watermark:
                    self.watermark = wm
            return self.watermark
        inp = self.inputs[topic]
        inp.last_active = now
        if ts > inp.max_ts:
            inp.max_ts = ts
        return self.recompute(now)

    def recompute(self, now: int) -> int:
        """Watermark from active inputs (idle ones excluded); called per record and on ticks."""
        active = []
        idle = []
        for inp in self.inputs.values():
            if inp.idleness is not None and now - inp.last_active >= inp.idleness:
                idle.append(inp)
            else:
                active.append(inp)
        if active:
            wm = min(i.max_ts - i.bound - 1 if i.max_ts != MIN_WATERMARK else MIN_WATERMARK for i in active)
        else:
            # All idle: nothing holds the watermark back, so it catches up with everything seen
            # (windows of a stream that went quiet still close).
            wm = max(i.max_ts - i.bound - 1 if i.max_ts != MIN_WATERMARK else MIN_WATERMARK for i in idle)
        if wm > self.watermark:
            self.watermark = wm
        return self.watermark

"""Per-task watermark: the minimum over the task's active inputs.

Two kinds of input:

- a *source* input (a user topic or a custom source's buffer): its watermark is derived
  from the timestamps seen, ``max - out_of_orderness - 1``;
- a *forwarded* input (a repartition topic written by upstream tasks): records from
  several upstream tasks interleave there, so timestamps say little. Upstream tasks
  instead write *watermark records* to every partition (at each checkpoint, inside its
  transaction), and the input's watermark is the minimum over all upstream tasks'
  latest watermarks — held back until every upstream task has reported (as Flink takes
  the minimum over its input channels).

Idleness applies to source inputs, and only when no records are waiting for them (a paused,
restoring or lagging input is slow, not idle); when every input is idle the watermark
catches up with the largest timestamp seen minus one. Upstream tasks forward that.
"""

from __future__ import annotations

from typing import Callable

from kstreamlet.eventtime import MIN_WATERMARK, WatermarkStrategy

#: Header marking a watermark record in a repartition topic (value: the watermark, ASCII).
WATERMARK_HEADER = "kstreamlet.watermark"
#: Header naming the upstream task that wrote it.
WATERMARK_SOURCE_HEADER = "kstreamlet.watermark.source"
WATERMARK_KEY = b"kstreamlet.watermark"


class _Input:
    __slots__ = ("bound", "idleness", "max_ts", "last_active", "upstream", "expected")

    def __init__(self, strategy: WatermarkStrategy, now: int, expected_upstream: int | None) -> None:
        self.bound = strategy.out_of_orderness_ms
        # Idleness is a property of sources: upstream tasks forward their idle-advanced watermark,
        # so a forwarded input is never declared idle here.
        self.idleness = strategy.idleness_ms if expected_upstream is None else None
        self.max_ts = MIN_WATERMARK
        self.last_active = now
        #: Forwarded inputs: latest watermark per upstream task.
        self.upstream: dict[str, int] | None = {} if expected_upstream is not None else None
        self.expected = expected_upstream or 0

    def watermark(self) -> int:
        if self.upstream is not None:
            if len(self.upstream) < self.expected:
                return MIN_WATERMARK
            return min(self.upstream.values())
        return self.max_ts - self.bound - 1 if self.max_ts != MIN_WATERMARK else MIN_WATERMARK

    def idle_watermark(self) -> int:
        if self.upstream is not None:
            return self.watermark()
        return self.max_ts - 1 if self.max_ts != MIN_WATERMARK else MIN_WATERMARK


class WatermarkTracker:
    """Tracks the inputs of one task and derives its watermark (never decreasing)."""

    def __init__(self, strategies: dict[str, WatermarkStrategy], now: int,
                 forwarded: dict[str, int] | None = None, backlog: "Callable[[str], bool] | None" = None) -> None:
        forwarded = forwarded or {}
        #: ``backlog(topic)``: records are waiting for this input (then it is not idle, only slow:
        #: e.g. paused while restoring, or catching up after a failover).
        self.backlog = backlog
        self.inputs = {topic: _Input(s, now, forwarded.get(topic)) for topic, s in strategies.items()}
        self.watermark = MIN_WATERMARK
        single = next(iter(self.inputs.values())) if len(self.inputs) == 1 else None
        self._single = single if single is not None and single.upstream is None else None

    def observe(self, topic: str, ts: int, now: int) -> int:
        """Record a data timestamp; returns the (possibly advanced) watermark."""
        single = self._single
        if single is not None:
            # (idleness of a single input is applied by recompute() on processing-time ticks)
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
        if inp.upstream is not None:
            return self.watermark  # data does not move a forwarded input; watermark records do
        return self.recompute(now)

    def observe_upstream(self, topic: str, source: str, watermark: int, now: int) -> int:
        """A watermark record from upstream task ``source`` arrived on forwarded input ``topic``."""
        inp = self.inputs[topic]
        inp.last_active = now
        if inp.upstream is not None and watermark > inp.upstream.get(source, MIN_WATERMARK):
            inp.upstream[source] = watermark
        return self.recompute(now)

    def recompute(self, now: int) -> int:
        """Watermark from active inputs (idle ones excluded); called per record and on ticks."""
        active = []
        idle = []
        for topic, inp in self.inputs.items():
            if inp.idleness is not None and now - inp.last_active >= inp.idleness and not (
                    self.backlog is not None and self.backlog(topic)):
                idle.append(inp)
            else:
                active.append(inp)
        if active:
            wm = min(i.watermark() for i in active)
        else:
            # All idle: nothing holds the watermark back and no more disorder is expected, so it
            # catches up with everything seen (the last windows of a quiet stream still close).
            wm = max(i.idle_watermark() for i in idle)
        if wm > self.watermark:
            self.watermark = wm
        return self.watermark

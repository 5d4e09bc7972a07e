"""Per-task watermark: the minimum over the task's active inputs.

Two kinds of input:

- a *source* input (a user topic or a custom source's buffer): its watermark is derived
  from the timestamps seen, ``max - out_of_orderness - 1``;
- a *forwarded* input (a repartition topic written by upstream tasks): records from
  several upstream tasks interleave there, so timestamps say little. Upstream tasks
  instead write *watermark records* to every partition (at each checkpoint, inside its
  transaction), and the input's watermark is the minimum over the *active* upstream tasks'
  latest watermarks — held back until every upstream task has reported (as Flink takes
  the minimum over its input channels).

Idleness (Flink's ``withIdleness``). A source input is idle when it had no record for the
idleness timeout — including one that never had a record — and no records are waiting for
it (a paused, restoring or lagging input is slow, not idle). A task whose inputs are all
idle is idle itself, and says so downstream: its watermark records carry an *idle* flag (an
idle upstream task with no data at all reports the minimum watermark, flagged idle). A
forwarded input ignores idle upstream tasks, and is idle itself when all of them are. When
every input is idle the watermark catches up with the largest timestamp (or upstream
watermark) seen minus one, so the last windows of a quiet stream still close; Flink's
watermark valve does the same (it emits the maximum over its channels when all go idle).

An idle input that becomes active again rejoins the minimum at once, but the task's
watermark never decreases: its records behind the watermark are late, later ones count,
and until it catches up it holds the watermark where it is (a lagging input holds it back).
Without an idleness timeout nothing is ever idle: an input (or upstream task) that never
had a record holds the watermark back for ever, as in Flink.
"""

from __future__ import annotations

from typing import Callable

from kstreamlet.eventtime import MIN_WATERMARK, WatermarkStrategy

#: Header marking a watermark record in a repartition topic (value: the watermark, ASCII).
WATERMARK_HEADER = "kstreamlet.watermark"
#: Header naming the upstream task that wrote it.
WATERMARK_SOURCE_HEADER = "kstreamlet.watermark.source"
#: Header present (value ``1``) when the upstream task is idle: downstream ignores it until it
#: sends a watermark record without it.
WATERMARK_IDLE_HEADER = "kstreamlet.watermark.idle"
WATERMARK_KEY = b"kstreamlet.watermark"


class _Input:
    __slots__ = ("bound", "idleness", "max_ts", "last_active", "upstream", "idle_upstream", "expected")

    def __init__(self, strategy: WatermarkStrategy, now: int, expected_upstream: int | None) -> None:
        self.bound = strategy.out_of_orderness_ms
        # Idleness of a forwarded input is not timed here: upstream tasks time their own sources
        # and flag themselves idle in their watermark records (see idle_upstream).
        self.idleness = strategy.idleness_ms if expected_upstream is None else None
        self.max_ts = MIN_WATERMARK
        self.last_active = now
        #: Forwarded inputs: latest watermark per upstream task, and the upstream tasks now idle.
        self.upstream: dict[str, int] | None = {} if expected_upstream is not None else None
        self.idle_upstream: set[str] = set()
        self.expected = expected_upstream or 0

    def complete(self) -> bool:
        """Forwarded: every upstream task has reported (a watermark or idleness)."""
        return self.upstream is not None and len(self.upstream) >= self.expected

    def watermark(self) -> int:
        if self.upstream is not None:
            if len(self.upstream) < self.expected:
                return MIN_WATERMARK
            active = [wm for src, wm in self.upstream.items() if src not in self.idle_upstream]
            return min(active) if active else self.idle_watermark()
        return self.max_ts - self.bound - 1 if self.max_ts != MIN_WATERMARK else MIN_WATERMARK

    def idle_watermark(self) -> int:
        if self.upstream is not None:
            return max(self.upstream.values()) if self.upstream and self.complete() else MIN_WATERMARK
        return self.max_ts - 1 if self.max_ts != MIN_WATERMARK else MIN_WATERMARK

    def is_idle(self, topic: str, now: int, backlog: "Callable[[str], bool] | None") -> bool:
        if self.upstream is not None:
            return self.complete() and bool(self.upstream) and all(s in self.idle_upstream for s in self.upstream)
        return (self.idleness is not None and now - self.last_active >= self.idleness
                and not (backlog is not None and backlog(topic)))


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
        #: Every input idle at the last :meth:`recompute` (then downstream is told this task is idle).
        self.idle = False
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
        if inp.upstream is not None:
            if ts > inp.max_ts:
                inp.max_ts = ts
            return self.watermark  # data does not move a forwarded input; watermark records do
        if not self.idle:
            # The minimum can rise only when the input holding it moves: a record that does not
            # advance its input, or advances an input already above the task's watermark, leaves
            # the watermark where it is. (Other inputs turning idle with time are the
            # processing-time ticks' recompute; an idle task recomputes on every record, so that
            # it becomes active at once.)
            if ts <= inp.max_ts:
                return self.watermark
            above = inp.max_ts != MIN_WATERMARK and inp.max_ts - inp.bound - 1 > self.watermark
            inp.max_ts = ts
            if above:
                return self.watermark
            return self.recompute(now)
        if ts > inp.max_ts:
            inp.max_ts = ts
        return self.recompute(now)

    def observe_upstream(self, topic: str, source: str, watermark: int, now: int, idle: bool = False) -> int:
        """A watermark record from upstream task ``source`` arrived on forwarded input ``topic``
        (``idle``: that task has no active input; it is ignored until it reports again without)."""
        inp = self.inputs[topic]
        inp.last_active = now
        if inp.upstream is not None:
            if watermark > inp.upstream.get(source, MIN_WATERMARK) or source not in inp.upstream:
                inp.upstream[source] = watermark
            if idle:
                inp.idle_upstream.add(source)
            else:
                inp.idle_upstream.discard(source)
        return self.recompute(now)

    def recompute(self, now: int) -> int:
        """Watermark from active inputs (idle ones excluded); called per record and on ticks."""
        active = []
        idle = []
        backlog = self.backlog
        for topic, inp in self.inputs.items():
            if inp.is_idle(topic, now, backlog):
                idle.append(inp)
            else:
                active.append(inp)
        if active:
            wm = min(i.watermark() for i in active)
        else:
            # All idle: nothing holds the watermark back and no more disorder is expected, so it
            # catches up with everything seen (the last windows of a quiet stream still close).
            wm = max(i.idle_watermark() for i in idle)
        self.idle = not active
        if wm > self.watermark:
            self.watermark = wm
        return self.watermark

    def holder(self, now: int) -> tuple[str, str | None, int] | None:
        """What holds the watermark where it is: ``(input topic, upstream task or None, its
        watermark)`` of the active input with the smallest watermark, ``upstream`` being
        ``"<k> of <n> upstream tasks not reported"`` while a forwarded input waits for some.
        None when every input is idle (nothing holds it back). For the debug log, per checkpoint."""
        best: tuple[str, str | None, int] | None = None
        for topic, inp in self.inputs.items():
            if inp.is_idle(topic, now, self.backlog):
                continue
            wm = inp.watermark()
            who: str | None = None
            if inp.upstream is not None:
                if not inp.complete():
                    who = f"{inp.expected - len(inp.upstream)} of {inp.expected} upstream tasks not reported"
                else:
                    active = [(w, s) for s, w in inp.upstream.items() if s not in inp.idle_upstream]
                    if active:
                        who = min(active)[1]
            if best is None or wm < best[2]:
                best = (topic, who, wm)
        return best

"""The multi-input per-record path of the watermark tracker skips the minimum over the inputs when
the record cannot move it (it does not advance its input, or its input is already above the
task's watermark). Against a tracker that recomputes on every record, over random interleavings
with disorder and idleness: with a processing-time tick whenever the clock moves (the member's
loop ticks timed tasks every iteration) both agree on every watermark and idle flag; with sparse
ticks it is never ahead (inputs turning idle with time are noticed at the next tick, not at the
next record of another input)."""

from __future__ import annotations

import random

import pytest

from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.runtime.watermarks import WatermarkTracker


class AlwaysRecompute(WatermarkTracker):
    def observe(self, topic: str, ts: int, now: int) -> int:
        inp = self.inputs[topic]
        inp.last_active = now
        if ts > inp.max_ts:
            inp.max_ts = ts
        return self.recompute(now)


@pytest.mark.parametrize("ticks", ["every_clock_move", "sparse"])
def test_the_fast_path_agrees_with_recomputing_on_every_record(ticks: str) -> None:
    for seed in range(40):
        rnd = random.Random(seed)
        n = rnd.choice([2, 3])
        strategies = {f"t{i}": WatermarkStrategy.for_bounded_out_of_orderness(rnd.choice([0, 5, 50]))
                      .with_idleness(rnd.choice([20, 100])) for i in range(n)}
        fast, ref = WatermarkTracker(strategies, 0), AlwaysRecompute(strategies, 0)
        now, ts = 0, {t: 0 for t in strategies}
        for step in range(3000):
            moved = rnd.choice([0, 1, 1, 2, 30])
            now += moved
            if ticks == "every_clock_move" and moved or ticks == "sparse" and rnd.random() < 0.05:
                a, b = (fast.recompute(now), fast.idle), (ref.recompute(now), ref.idle)
                assert a == b or ticks == "sparse" and a[0] <= b[0], (seed, step, a, b)
            # inputs at different speeds; some go quiet for a while (idle), then come back
            t = rnd.choices(list(strategies), weights=[1, 3, 6][:n])[0]
            ts[t] += rnd.choice([-20, -3, 0, 1, 2, 5, 40])
            got, want = fast.observe(t, ts[t], now), ref.observe(t, ts[t], now)
            if ticks == "every_clock_move":
                assert (got, fast.idle) == (want, ref.idle), (seed, step, got, want)
            else:
                assert got <= want, (seed, step, got, want)

"""Window and trigger cases checked against Flink's WindowOperator / trigger semantics (issue 14)."""

from __future__ import annotations

import pytest

from kstreamlet import serdes
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import (
    ContinuousEventTimeTrigger,
    CountTrigger,
    EventTimeSessionWindows,
    ProcessingTimeSessionWindows,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from tests.unit.window_helpers import keyed_app, pipe, records


# --- 1. session lateness is judged on the merged window (WindowOperator.isWindowLate(actualWindow)) ---------

def test_session_late_element_merging_into_kept_session_fires():
    app, keyed = keyed_app()
    result = (keyed.window(EventTimeSessionWindows.with_gap(10)).allowed_lateness(20)
              .side_output_late_data("late").sum())
    result.to("out", value_serde=serdes.JSON)
    result.side_output("late").to("late", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 125)])  # wm 124: [100,110) fired, kept until 109 + 20 = 129
        assert records(d, "out") == [("k", 109, 1)]
        # Its own window [95,105) is late (104 + 20 <= 124), but it merges into [100,110), which
        # is kept: the merged [95,110) is not late, so it takes the element and fires again.
        pipe(d, [("k", 4, 95)])
        assert records(d, "out") == [("k", 109, 5)]
        assert d.output_topic("late", value_serde=serdes.JSON).is_empty()
        pipe(d, [("k", 8, 50)])  # merges with nothing and its own window is late: side output
        assert d.output_topic("late", value_serde=serdes.JSON).read_values_to_list() == [8]
        assert records(d, "out") == []


def test_session_late_element_bridging_two_sessions_merges_them():
    app, keyed = keyed_app()
    keyed.window(EventTimeSessionWindows.with_gap(10)).allowed_lateness(100).apply(
        lambda key, w, items: [w.start, w.end, sorted(items)]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 0, 0), ("k", 15, 15), ("k", 60, 60)])  # wm 59: [0,10) and [15,25) fired
        assert [v for _, _, v in records(d, "out")] == [[0, 10, [0]], [15, 25, [15]]]
        pipe(d, [("k", 8, 8)])  # [8,18) bridges them: one session [0,25), late, fires at once
        assert [v for _, _, v in records(d, "out")] == [[0, 25, [0, 8, 15]]]


# --- 2. count trigger on merging windows: counts merge, fires at count >= n and clears the count ---------------

def test_count_trigger_on_sessions_fires_when_merge_reaches_n():
    app, keyed = keyed_app(bound_ms=1000)  # nothing fires on time
    keyed.window(EventTimeSessionWindows.with_gap(10)).trigger(CountTrigger.of(3)).count().to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 0, 0), ("k", 0, 20), ("k", 0, 1), ("k", 0, 21)])  # [0,11): 2, [20,31): 2
        out = d.output_topic("out", value_serde=serdes.INT64)
        assert out.is_empty()
        pipe(d, [("k", 0, 10)])  # merges both: 2 + 2 + 1 = 5 >= 3 -> fires (contents kept), count cleared
        assert out.read_values_to_list() == [5]
        pipe(d, [("k", 0, 5), ("k", 0, 6)])
        assert out.is_empty()  # count 2 since the firing
        pipe(d, [("k", 0, 7)])
        assert out.read_values_to_list() == [8]


def test_count_trigger_does_not_fire_at_window_end():
    # Flink's CountTrigger.onEventTime is CONTINUE: leftovers are dropped at cleanup, never fired.
    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(10)).trigger(CountTrigger.of(2)).count().to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 0, 1), ("k", 0, 2), ("k", 0, 3), ("k", 0, 50)])
        assert d.output_topic("out", value_serde=serdes.INT64).read_values_to_list() == [2]


# --- 3. continuous event-time trigger ------------------------------------------------------------------

def test_continuous_trigger_first_firing_anchored_on_first_element():
    # First element 25, interval 20: start = 25 - 25 % 20 = 20, timer at 40, fired when the watermark
    # reaches 40 (not 39, and not on the window start's grid shifted by one).
    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(ContinuousEventTimeTrigger.of(20)).count().to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        out = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.INT64)
        pipe(d, [("k", 0, 25), ("k", 0, 39), ("k", 0, 40)])  # wm 39
        assert out.is_empty()
        pipe(d, [("k", 0, 41)])  # wm 40: timer 40 fires, next 60
        assert [(r.timestamp, r.value) for r in out.read_records_to_list()] == [(99, 4)]
        pipe(d, [("k", 0, 61)])  # wm 60
        assert out.read_values_to_list() == [5]
        pipe(d, [("k", 0, 200)])  # wm 199: 80 (no new element: Flink fires again), then 99, the end
        assert out.read_values_to_list() == [5, 5]


def test_continuous_trigger_on_sessions_fires_early():
    app, keyed = keyed_app()
    keyed.window(EventTimeSessionWindows.with_gap(100)).trigger(ContinuousEventTimeTrigger.of(10)).count().to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        out = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.INT64)
        pipe(d, [("k", 0, 1), ("k", 0, 5)])  # session [1,105), next firing 10 (merged: min of the fire times)
        assert out.is_empty()
        pipe(d, [("k", 0, 12)])  # wm 11
        assert out.read_values_to_list() == [3]
        pipe(d, [("k", 0, 25)])  # wm 24: the timer at 20
        assert out.read_values_to_list() == [4]
        pipe(d, [("k", 0, 1000)])  # wm 999: 30, 40, ..., 120, then the end 124
        recs = out.read_records_to_list()
        assert [r.value for r in recs] == [4] * 11
        assert recs[-1].timestamp == 124


# --- 7. assigner parameters ------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: TumblingEventTimeWindows.of(10, 10), r"offset.*\|offset\| < size"),
    (lambda: TumblingEventTimeWindows.of(10, -10), r"offset.*\|offset\| < size"),
    (lambda: TumblingProcessingTimeWindows.of(10, 11), r"offset"),
    (lambda: SlidingEventTimeWindows.of(10, 5, 5), r"offset.*\|offset\| < slide"),
    (lambda: SlidingEventTimeWindows.of(10, 5, -7), r"offset.*\|offset\| < slide"),
    (lambda: SlidingProcessingTimeWindows.of(10, 5, 5), r"offset"),
    (lambda: TumblingEventTimeWindows.of(0), r"size.*> 0"),
    (lambda: SlidingEventTimeWindows.of(-1, 5), r"size.*> 0"),
    (lambda: SlidingEventTimeWindows.of(10, 0), r"slide.*> 0"),
    (lambda: EventTimeSessionWindows.with_gap(0), r"gap.*> 0"),
    (lambda: ProcessingTimeSessionWindows.with_gap(-5), r"gap.*> 0"),
])
def test_assigner_rejects_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_assigner_offsets_within_range():
    w = TumblingEventTimeWindows.of(10, -3).assign(0)
    assert [(x.start, x.end) for x in w] == [(-3, 7)]
    w = TumblingEventTimeWindows.of(10, 9).assign(0)
    assert [(x.start, x.end) for x in w] == [(-1, 9)]
    w = SlidingEventTimeWindows.of(10, 5, 4).assign(0)
    assert [(x.start, x.end) for x in w] == [(-1, 9), (-6, 4)]


def test_session_merge_keeps_timers_other_sessions_need():
    # Timers are per key and time: [0,5)'s cleanup timer (4 + 20 = 24) is [20,25)'s end timer. The
    # merge of [0,5) into [0,8) must not delete it, or [20,25) would never fire.
    app, keyed = keyed_app(bound_ms=100)
    keyed.window(EventTimeSessionWindows.with_gap(5)).allowed_lateness(20).apply(
        lambda key, w, items: [w.start, w.end, sorted(items)]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 0, 0), ("k", 20, 20), ("k", 3, 3), ("k", 500, 500)])
        assert [v for _, _, v in records(d, "out")] == [[0, 8, [0, 3]], [20, 25, [20]]]


def test_processing_time_sessions_merge_and_fire_on_wall_clock():
    app, keyed = keyed_app()
    keyed.window(ProcessingTimeSessionWindows.with_gap(100)).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, wall_clock_ms=10_000) as d:
        out = d.output_topic("out", value_serde=serdes.INT64)
        pipe(d, [("k", 1, 0)])
        d.advance_wall_clock_time(60)
        pipe(d, [("k", 2, 0)])  # [10000,10100) and [10060,10160) merge
        d.advance_wall_clock_time(90)
        assert out.is_empty()
        d.advance_wall_clock_time(10)  # 10160: the merged session's end
        assert out.read_values_to_list() == [2]

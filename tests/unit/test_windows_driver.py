"""Windows with Flink's semantics, through the TopologyTestDriver."""

from __future__ import annotations

from kstreamlet import serdes
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import (
    ContinuousEventTimeTrigger,
    CountTrigger,
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from tests.unit.window_helpers import keyed_app, pipe


def test_tumbling_sum_fires_when_watermark_passes_window_end():
    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(10)).sum().to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        out = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON)
        pipe(d, [("a", 1, 0), ("a", 2, 5), ("b", 10, 9)])
        assert out.is_empty(), "watermark 8: window [0,10) still open"
        pipe(d, [("a", 4, 10)])  # watermark 9 = max_timestamp of [0,10)
        recs = out.read_records_to_list()
        assert sorted((r.key, r.value, r.timestamp) for r in recs) == [("a", 3, 9), ("b", 10, 9)]


def test_allowed_lateness_refires_and_later_data_goes_to_side_output():
    app, keyed = keyed_app()
    result = (keyed.window(TumblingEventTimeWindows.of(10)).allowed_lateness(5)
              .side_output_late_data("late").count())
    result.to("out", value_serde=serdes.INT64)
    result.side_output("late").to("late", value_serde=serdes.JSON)
    sinks = [s.topic for st in app.topology().subtopologies for s in st.sinks]
    assert sorted(sinks) == ["late", "out"], f"the late-data sink must belong to the sub-topology, saw {sinks}"
    with TopologyTestDriver(app) as d:
        out = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.INT64)
        late = d.output_topic("late", value_serde=serdes.JSON)
        pipe(d, [("a", "x", 1), ("a", "x", 2), ("a", "x", 12)])  # wm 11: [0,10) fires with 2
        assert out.read_key_values_to_list() == [("a", 2)]
        pipe(d, [("a", "late-ok", 3)])  # within lateness (wm 11 < 9 + 5): fires again with 3
        assert out.read_key_values_to_list() == [("a", 3)]
        pipe(d, [("a", "x", 15)])  # wm 14 = 9 + 5: state of [0,10) dropped
        pipe(d, [("a", "too-late", 4)])
        assert late.read_values_to_list() == ["too-late"]
        assert out.is_empty()


def test_sliding_windows_each_element_in_size_over_slide_windows():
    app, keyed = keyed_app()
    keyed.window(SlidingEventTimeWindows.of(10, 5)).apply(
        lambda key, w, items: [w.start, w.end, sorted(items)]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        out = d.output_topic("out", value_serde=serdes.JSON)
        pipe(d, [("k", 1, 1), ("k", 7, 7), ("k", 12, 12), ("k", 100, 100)])
        assert out.read_values_to_list() == [[-5, 5, [1]], [0, 10, [1, 7]], [5, 15, [7, 12]], [10, 20, [12]]]


def test_session_windows_merge_when_gaps_close():
    app, keyed = keyed_app(bound_ms=20)
    keyed.window(EventTimeSessionWindows.with_gap(5)).apply(
        lambda key, w, items: [w.start, w.end, sorted(items)]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        out = d.output_topic("out", value_serde=serdes.JSON)
        pipe(d, [("k", 1, 1), ("k", 10, 10), ("k", 4, 4)])  # [1,6) and [4,9) merge; [10,15) apart
        pipe(d, [("k", 8, 8)])  # [1,9) ∪ [8,13) ∪ [10,15) -> [1,15)
        pipe(d, [("k", 99, 99)])
        assert out.read_values_to_list() == [[1, 15, [1, 4, 8, 10]]]


def test_count_trigger_and_continuous_trigger():
    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(CountTrigger.of(2)).count().to("counts", value_serde=serdes.INT64)
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(ContinuousEventTimeTrigger.of(20)).count().to(
        "early", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 0, 1), ("k", 0, 2), ("k", 0, 3), ("k", 0, 20), ("k", 0, 30), ("k", 0, 45)])
        assert d.output_topic("counts", value_serde=serdes.INT64).read_values_to_list() == [2, 4, 6]
        # Flink's ContinuousEventTimeTrigger anchors the first early firing on the first element
        # (ts 1: 1 - 1 % 20 + 20 = 20) and registers the timer at 20, which fires when the
        # watermark reaches 20 -- not at 19 (the watermark 19 after ts 20 fires nothing), as an
        # earlier version pinned. Then every 20: 40. As in Flink the element that moves the watermark
        # is in the window before the watermark advances: 5 elements at 20 (after ts 30), 6 at 40.
        assert d.output_topic("early", value_serde=serdes.INT64).read_values_to_list() == [5, 6]


def test_count_windows_tumbling_and_sliding():
    app, keyed = keyed_app()
    keyed.count_window(3).to("tumbling", value_serde=serdes.JSON)
    keyed.count_window(3, slide=1, fn=lambda k, items, out: out(sum(items))).to("sliding", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", i, i) for i in range(1, 7)])
        assert d.output_topic("tumbling", value_serde=serdes.JSON).read_values_to_list() == [[1, 2, 3], [4, 5, 6]]
        assert d.output_topic("sliding", value_serde=serdes.JSON).read_values_to_list() == [1, 3, 6, 9, 12, 15]


def test_processing_time_windows_close_on_wall_clock():
    app, keyed = keyed_app()
    keyed.window(TumblingProcessingTimeWindows.of(1000)).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, wall_clock_ms=10_000) as d:
        pipe(d, [("k", 1, 0), ("k", 2, 0)])
        out = d.output_topic("out", value_serde=serdes.INT64)
        d.advance_wall_clock_time(998)
        assert out.is_empty()
        d.advance_wall_clock_time(1)
        assert out.read_values_to_list() == [2]

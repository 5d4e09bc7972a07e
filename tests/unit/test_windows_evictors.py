"""Window evictors (Flink's ``Evictor``, ``CountEvictor``, ``TimeEvictor``, ``DeltaEvictor``, the
``EvictingWindowOperator``), issue 14. Scenarios after Flink's EvictingWindowOperatorTest."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kstreamlet import serdes
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import (
    CountEvictor,
    CountTrigger,
    DeltaEvictor,
    EventTimeSessionWindows,
    Evictor,
    GlobalWindows,
    PurgingTrigger,
    SlidingEventTimeWindows,
    TimeEvictor,
    TimestampedValue,
    TumblingEventTimeWindows,
)
from tests.unit.window_helpers import keyed_app, pipe, records


def values(d, topic="out"):
    return [v for _, _, v in records(d, topic)]


def test_count_evictor_keeps_the_last_n_before_the_window_function():
    # EvictingWindowOperatorTest.testCountTrigger: GlobalWindows, CountTrigger(slide), CountEvictor(size):
    # every 2 elements, the sum of the last 4 of the key; evicted elements are gone from the window.
    app, keyed = keyed_app()
    (keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(2)).evictor(CountEvictor.of(4))
        .reduce(lambda a, b: a + b).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app, partitions={"in": 2}) as d:  # "a" and "d" are in different partitions
        pipe(d, [("a", i, i) for i in range(1, 9)] + [("d", 10 * i, i) for i in range(1, 5)])
        got = records(d, "out")
        assert [v for k, _, v in got if k == "a"] == [1 + 2, 1 + 2 + 3 + 4, 3 + 4 + 5 + 6, 5 + 6 + 7 + 8]
        assert [v for k, _, v in got if k == "d"] == [30, 100]
        assert [ts for k, ts, _ in got if k == "a"] == [2, 4, 6, 8], "global windows: the firing element's time"


def test_count_evictor_after_the_window_function_sees_all_then_trims():
    app, keyed = keyed_app()
    (keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(2))
        .evictor(CountEvictor.of(3, do_evict_after=True)).sum().to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("a", i, i) for i in range(1, 7)])
        # sees [1,2]; [1,2,3,4] then keeps [2,3,4]; [2,3,4,5,6]
        assert values(d) == [3, 10, 20]


def test_count_evictor_on_sliding_windows_keeps_each_windows_last_elements():
    app, keyed = keyed_app(bound_ms=1000)
    (keyed.window(SlidingEventTimeWindows.of(300, 100)).evictor(CountEvictor.of(2))
        .apply(lambda key, w, items: [w.start, items]).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        # arrival order counts, not timestamps: 250 arrives last
        pipe(d, [("k", "a", 10), ("k", "b", 120), ("k", "c", 150), ("k", "d", 50), ("k", "e", 250)])
        pipe(d, [("k", "flush", 5000)])
        got = sorted(v for v in values(d) if v[0] < 1000)
        assert got == [[-200, ["a", "d"]], [-100, ["c", "d"]], [0, ["d", "e"]], [100, ["c", "e"]], [200, ["e"]]]


def test_time_evictor_keeps_the_last_window_size_of_element_time():
    # EvictingWindowOperatorTest.testTimeEvictorEvictBefore: tumbling windows, a count trigger and
    # TimeEvictor(size): elements with timestamp <= max timestamp - size are removed before the function.
    app, keyed = keyed_app(bound_ms=10_000)
    (keyed.window(TumblingEventTimeWindows.of(1000)).trigger(CountTrigger.of(3))
        .evictor(TimeEvictor.of(timedelta(milliseconds=200)))
        .apply(lambda key, w, items: sorted(items)).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 100, 100), ("k", 500, 500), ("k", 300, 300)])  # max 500: cutoff 300 (<= removed)
        assert values(d) == [[500]]
        pipe(d, [("k", 450, 450), ("k", 650, 650), ("k", 200, 200)])  # [500, 450, 650, 200]: cutoff 450
        assert values(d) == [[500, 650]]


def test_time_evictor_after_the_window_function():
    app, keyed = keyed_app(bound_ms=10_000)
    (keyed.window(TumblingEventTimeWindows.of(1000)).trigger(CountTrigger.of(2))
        .evictor(TimeEvictor.of(100, do_evict_after=True))
        .apply(lambda key, w, items: sorted(items)).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 100, 100), ("k", 500, 500), ("k", 550, 550), ("k", 580, 580)])
        assert values(d) == [[100, 500], [500, 550, 580]]


def test_delta_evictor_removes_elements_too_far_from_the_last():
    # EvictingWindowOperatorTest.testDeltaEvictorEvictBefore: delta(element, last) >= threshold is evicted.
    app, keyed = keyed_app()
    (keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(3))
        .evictor(DeltaEvictor.of(4.0, lambda old, new: abs(new - old)))
        .apply(lambda key, w, items: items).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 1), ("k", 5, 2), ("k", 7, 3)])  # deltas to 7: 6, 2, 0
        pipe(d, [("k", 10, 4), ("k", 2, 5), ("k", 3, 6)])  # [5, 7, 10, 2, 3]: deltas to 3: 2, 4, 7, 1, 0
        assert values(d) == [[5, 7], [5, 2, 3]]


def test_delta_evictor_after_the_window_function():
    app, keyed = keyed_app()
    (keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(2))
        .evictor(DeltaEvictor.of(3, lambda old, new: abs(new - old), do_evict_after=True))
        .sum().to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 1), ("k", 10, 2), ("k", 11, 3), ("k", 12, 4)])
        assert values(d) == [11, 33]  # [1, 10] (then 1 evicted), [10, 11, 12]


def test_user_evictor_sees_timestamped_values_window_and_context():
    seen = []

    class DropOldAndOdd(Evictor):
        def evict_before(self, elements, size, window, ctx):
            seen.append((size, window.start, ctx.current_watermark, [(e.value, e.timestamp) for e in elements]))
            elements[:] = [e for e in elements if e.value % 2 == 0 and e.timestamp > ctx.current_watermark - 50]

    app, keyed = keyed_app()
    (keyed.window(TumblingEventTimeWindows.of(100)).allowed_lateness(100).evictor(DropOldAndOdd())
        .sum().to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 2, 10), ("k", 3, 60), ("k", 4, 70), ("k", 8, 120)])  # wm 119: [0,100) fires
        assert values(d) == [4]
        assert seen == [(3, 0, 119, [(2, 10), (3, 60), (4, 70)])]
        pipe(d, [("k", 6, 90)])  # late, within the lateness: fires again over what is left
        assert values(d) == [10]
        assert seen[-1][3] == [(4, 70), (6, 90)]
    assert TimestampedValue(1, 2) == TimestampedValue(value=1, timestamp=2)


def test_evictor_that_removes_everything_emits_nothing():
    app, keyed = keyed_app()
    (keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(2)).evictor(TimeEvictor.of(0))
        .count().to("out", value_serde=serdes.INT64))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 5), ("k", 1, 5), ("k", 1, 5), ("k", 1, 5)])
        assert d.output_topic("out", value_serde=serdes.INT64).is_empty()


def test_evictor_with_aggregate_process_and_purging_trigger():
    app, keyed = keyed_app()
    w = keyed.window(GlobalWindows.create()).trigger(PurgingTrigger.of(CountTrigger.of(3))).evictor(CountEvictor.of(2))
    w.count().to("counts", value_serde=serdes.INT64)
    app2, keyed2 = keyed_app()
    (keyed2.window(GlobalWindows.create()).trigger(PurgingTrigger.of(CountTrigger.of(3))).evictor(CountEvictor.of(2))
        .process(lambda key, win, items, out: out([key, items])).to("out", value_serde=serdes.JSON))
    events = [("k", i, i) for i in range(1, 8)]
    with TopologyTestDriver(app) as d:
        pipe(d, events)
        assert d.output_topic("counts", value_serde=serdes.INT64).read_values_to_list() == [2, 2]
    with TopologyTestDriver(app2) as d:
        pipe(d, events)
        assert values(d) == [["k", [2, 3]], ["k", [5, 6]]]


def test_evictor_on_session_windows_merges_the_element_lists():
    app, keyed = keyed_app(bound_ms=100)
    (keyed.window(EventTimeSessionWindows.with_gap(10)).evictor(CountEvictor.of(2))
        .apply(lambda key, w, items: [w.start, w.end, items]).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        # [10,20) bridges [0,10) and [20,30): the merged contents are [a, b] (window order), then c
        pipe(d, [("k", "a", 0), ("k", "b", 20), ("k", "c", 10), ("k", "flush", 1000)])
        assert values(d) == [[0, 30, ["b", "c"]]]


def test_evicting_window_contents_and_timers_survive_restart():
    app, keyed = keyed_app()
    (keyed.window(TumblingEventTimeWindows.of(100)).evictor(CountEvictor.of(2))
        .apply(lambda key, w, items: items).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [("a", 1, 10), ("a", 2, 20), ("d", 3, 30)])
        d.restart()
        pipe(d, [("a", 4, 40), ("d", 5, 50), ("a", 6, 150), ("d", 7, 150)])
        assert sorted(values(d)) == [[2, 4], [3, 5]]


def test_evictor_parameters_are_checked():
    with pytest.raises(ValueError, match="count evictor count must be > 0"):
        CountEvictor.of(0)
    with pytest.raises(TypeError):
        TimeEvictor.of(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0 ms"):
        TimeEvictor.of(-1)
    with pytest.raises(TypeError, match="callable"):
        DeltaEvictor.of(1.0, 3)  # type: ignore[arg-type]
    assert TimeEvictor.of(timedelta(seconds=2)).window_size == 2000
    app, keyed = keyed_app()
    with pytest.raises(TypeError, match="must be a kstreamlet.windowing Evictor"):
        keyed.window(GlobalWindows.create()).evictor(lambda *a: None)  # type: ignore[arg-type]


def test_evictor_on_processing_time_windows_fires_and_cleans_up_on_the_wall_clock():
    from kstreamlet.windowing import TumblingProcessingTimeWindows

    app, keyed = keyed_app()
    (keyed.window(TumblingProcessingTimeWindows.of(1000)).evictor(CountEvictor.of(2))
        .apply(lambda key, w, items: [w.start, items], name="w").to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app, wall_clock_ms=10_100, partitions={"in": 2}) as d:
        pipe(d, [("a", 1, 0), ("a", 2, 0), ("d", 3, 0), ("a", 4, 0)])  # event timestamps do not matter
        d.advance_wall_clock_time(898)
        assert records(d, "out") == []
        d.advance_wall_clock_time(1)  # 10_999: the windows' end (ProcessingTimeTrigger) and cleanup
        assert sorted(values(d)) == [[10_000, [2, 4]], [10_000, [3]]]
        assert d.key_value_store("w-windows") == {}, "contents and timers are gone after the cleanup"


@pytest.mark.parametrize("size,slide", [(3, None), (4, 2), (2, 3)])
def test_count_window_equals_global_windows_with_count_trigger_and_evictor(size, slide):
    # Flink's countWindow(size) = GlobalWindows + PurgingTrigger(CountTrigger(size)); countWindow(size,
    # slide) = GlobalWindows + CountEvictor(size) + CountTrigger(slide).
    events = [(k, i, i) for i in range(1, 12) for k in ("a", "d")]
    app, keyed = keyed_app()
    keyed.count_window(size, slide).to("out", value_serde=serdes.JSON)
    app2, keyed2 = keyed_app()
    w = keyed2.window(GlobalWindows.create())
    w = (w.trigger(PurgingTrigger.of(CountTrigger.of(size))) if slide is None
         else w.trigger(CountTrigger.of(slide)).evictor(CountEvictor.of(size)))
    w.apply(lambda key, win, items: items).to("out", value_serde=serdes.JSON)
    outs = []
    for a in (app, app2):
        with TopologyTestDriver(a, partitions={"in": 2}) as d:
            pipe(d, events)
            outs.append(sorted((k, v) for k, _, v in records(d, "out")))
    assert outs[0] == outs[1] and outs[0]

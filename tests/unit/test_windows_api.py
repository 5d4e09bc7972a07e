"""Window API additions (issue 14): int64 saturation near the end of time, timedelta durations,
dynamic session gaps."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.operators.window import cleanup_time
from kstreamlet.state.codec import MAX_TIMESTAMP
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import (
    EventTimeSessionWindows,
    TimeWindow,
    TumblingEventTimeWindows,
)
from tests.unit.window_helpers import keyed_app, pipe, records


# --- 0. saturation ------------------------------------------------------------------------------------

def test_cleanup_time_saturates():
    assert cleanup_time(TimeWindow(0, 10), 5) == 14
    assert cleanup_time(TimeWindow(0, 10), 2**63 - 1) == MAX_TIMESTAMP
    assert cleanup_time(TimeWindow(MAX_TIMESTAMP - 3, MAX_TIMESTAMP), 2**62) == MAX_TIMESTAMP


def test_assigners_saturate_window_end():
    w, = TumblingEventTimeWindows.of(10).assign(MAX_TIMESTAMP - 1)
    assert w.end == MAX_TIMESTAMP and w.start <= MAX_TIMESTAMP - 1
    w, = EventTimeSessionWindows.with_gap(2**63 - 1).assign(5)
    assert w == TimeWindow(5, MAX_TIMESTAMP)


def test_allowed_lateness_near_int64_max():
    app, keyed = keyed_app()
    result = keyed.window(TumblingEventTimeWindows.of(10)).allowed_lateness(2**63 - 1).side_output_late_data("late").sum()
    result.to("out", value_serde=serdes.JSON)
    result.side_output("late").to("late", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 1000)])
        assert records(d, "out") == [("k", 109, 1)]
        pipe(d, [("k", 4, 105)])  # late, but within the (saturated) allowed lateness: fires again
        assert records(d, "out") == [("k", 109, 5)]
        pipe(d, [("k", 8, MAX_TIMESTAMP - 1)])  # window [.., MAX) and a watermark near the end of time
        pipe(d, [("k", 16, 106)])
        assert records(d, "out") == [("k", 1009, 2), ("k", 109, 21)]
        assert d.output_topic("late", value_serde=serdes.JSON).is_empty()


def test_session_gap_near_int64_max():
    app, keyed = keyed_app()
    keyed.window(EventTimeSessionWindows.with_gap(2**63 - 1)).allowed_lateness(2**62).emit_updates().sum().to(
        "out", value_serde=serdes.JSON)
    end = MAX_TIMESTAMP - 1  # the sessions end at the end of time
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 5000), ("j", 4, 7), ("k", 8, MAX_TIMESTAMP - 1)])
        assert records(d, "out") == [("k", end, 1), ("k", end, 3), ("j", end, 4), ("k", end, 11)]


# --- 1. durations: milliseconds or datetime.timedelta ---------------------------------------------------

def test_assigners_take_timedeltas():
    from kstreamlet.windowing import (
        ProcessingTimeSessionWindows,
        SlidingEventTimeWindows,
        SlidingProcessingTimeWindows,
        TumblingProcessingTimeWindows,
    )
    s = timedelta(seconds=1)
    assert TumblingEventTimeWindows.of(s, timedelta(milliseconds=200)) == TumblingEventTimeWindows.of(1000, 200)
    assert TumblingProcessingTimeWindows.of(s) == TumblingProcessingTimeWindows.of(1000)
    assert SlidingEventTimeWindows.of(2 * s, s, timedelta(milliseconds=-5)) == SlidingEventTimeWindows.of(2000, 1000, -5)
    assert SlidingProcessingTimeWindows.of(2 * s, s) == SlidingProcessingTimeWindows.of(2000, 1000)
    assert EventTimeSessionWindows.with_gap(timedelta(minutes=1)) == EventTimeSessionWindows.with_gap(60_000)
    assert ProcessingTimeSessionWindows.with_gap(s) == ProcessingTimeSessionWindows.with_gap(1000)
    with pytest.raises(ValueError, match="size must be > 0"):
        TumblingEventTimeWindows.of(timedelta(0))
    with pytest.raises(TypeError, match="window gap"):
        EventTimeSessionWindows.with_gap(1.5)  # type: ignore[arg-type]


def test_trigger_and_lateness_take_timedeltas():
    from kstreamlet.windowing import ContinuousEventTimeTrigger
    assert ContinuousEventTimeTrigger.of(timedelta(milliseconds=20)) == ContinuousEventTimeTrigger.of(20)
    with pytest.raises(ValueError, match="interval must be > 0"):
        ContinuousEventTimeTrigger.of(timedelta(microseconds=10))
    app, keyed = keyed_app()
    with pytest.raises(ValueError, match="allowed lateness must be >= 0"):
        keyed.window(TumblingEventTimeWindows.of(10)).allowed_lateness(timedelta(milliseconds=-1))
    result = (keyed.window(TumblingEventTimeWindows.of(timedelta(milliseconds=10)))
              .allowed_lateness(timedelta(milliseconds=20)).side_output_late_data("late").sum())
    result.to("out", value_serde=serdes.JSON)
    result.side_output("late").to("late", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 125)])  # wm 124: [100,110) fired, kept until 109 + 20
        assert records(d, "out") == [("k", 109, 1)]
        pipe(d, [("k", 4, 105)])
        assert records(d, "out") == [("k", 109, 5)]
        pipe(d, [("k", 8, 130), ("k", 16, 101)])  # wm 129 >= 129: gone
        assert d.output_topic("late", value_serde=serdes.JSON).read_values_to_list() == [16]


# --- 2. session windows with a dynamic gap (Flink's DynamicEventTimeSessionWindows) ----------------------

def _gap(v):
    return v["gap"]


@pytest.mark.parametrize("as_timedelta", [False, True])
def test_dynamic_session_gap_per_element(as_timedelta):
    app = App(application_id="winapi", bootstrap_servers="127.0.0.1:1")
    keyed = app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON,
                       watermarks=WatermarkStrategy.for_bounded_out_of_orderness(0)).keyed()
    fn = (lambda v: timedelta(milliseconds=v["gap"])) if as_timedelta else _gap
    keyed.window(EventTimeSessionWindows.with_dynamic_gap(fn)).sum("v").to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [
            ("a", {"v": 1, "gap": 5}, 100),    # [100,105)
            ("b", {"v": 1, "gap": 50}, 100),   # [100,150)
            ("a", {"v": 2, "gap": 30}, 110),   # [110,140): 110 is past the first session's gap
            ("a", {"v": 4, "gap": 1}, 139),    # [139,140) lies inside [110,140)
            ("b", {"v": 2, "gap": 1}, 149),    # [149,150) inside [100,150)
            ("b", {"v": 8, "gap": 20}, 140),   # [140,160) merges: [100,160)
            ("a", {"v": 0, "gap": 1}, 10_000), ("b", {"v": 0, "gap": 1}, 10_000),
        ])
        assert sorted(records(d, "out")) == [("a", 104, 1), ("a", 139, 6), ("b", 159, 11)]


def test_dynamic_session_gap_must_be_positive():
    app, keyed = keyed_app()
    keyed.window(EventTimeSessionWindows.with_dynamic_gap(_gap)).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        pipe(d, [("a", {"gap": 0}, 100), ("a", {"gap": 5}, 101), ("a", {"gap": 1}, 1000)])
        assert d.output_topic("out", value_serde=serdes.INT64).read_values_to_list() == [1]
        dlq = d.dlq_topic().read_records_to_list()  # the record with the bad gap fails (default policy: DLQ)
    assert len(dlq) == 1
    headers = dict(dlq[0].headers)
    assert headers["kstreamlet.error.type"] == b"ValueError"
    assert headers["kstreamlet.error.message"].startswith(
        b"dynamic session gap must be > 0 ms: gap extractor _gap returned 0 for value")
    with pytest.raises(ValueError, match="gap extractor .*<lambda> returned -5"):
        EventTimeSessionWindows.with_dynamic_gap(lambda v: -5).assign_element(1, 0)
    with pytest.raises(TypeError, match="callable"):
        EventTimeSessionWindows.with_dynamic_gap(5)  # type: ignore[arg-type]


def test_dynamic_processing_time_sessions():
    from kstreamlet.windowing import ProcessingTimeSessionWindows
    app, keyed = keyed_app()
    keyed.window(ProcessingTimeSessionWindows.with_dynamic_gap(_gap)).sum("v").to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, wall_clock_ms=1000) as d:
        pipe(d, [("a", {"v": 1, "gap": 100}, 0)])    # [1000,1100)
        d.advance_wall_clock_time(50)
        pipe(d, [("a", {"v": 2, "gap": 200}, 0)])    # [1050,1250): merged [1000,1250)
        d.advance_wall_clock_time(100)  # 1150: the first gap alone would have closed it
        assert records(d, "out") == []
        d.advance_wall_clock_time(100)  # 1250
        assert records(d, "out") == [("a", 1249, 3)]


# --- 3. results that carry their window (Kafka Streams' Windowed<K>) ----------------------------------

def _win(key, start, end, value):
    return {"start": start, "end": end, "key": key, "value": value}


@pytest.mark.parametrize("op, expected", [
    ("count", [2, 1]),
    ("sum", [3, 4]),
    ("min", [1, 4]),
    ("max", [2, 4]),
    ("reduce", [3, 4]),
    ("aggregate", [3, 4]),
    ("apply", [[1, 2], [4]]),
    ("process", [[1, 2], [4]]),
])
def test_with_window_results(op, expected):
    from kstreamlet.operators.aggregate import Sum, extractor
    app, keyed = keyed_app()
    w = keyed.window(TumblingEventTimeWindows.of(10)).with_window()
    result = {
        "count": lambda: w.count(), "sum": lambda: w.sum(), "min": lambda: w.min(), "max": lambda: w.max(),
        "reduce": lambda: w.reduce(lambda a, b: a + b),
        "aggregate": lambda: w.aggregate(Sum(extractor(None))),
        "apply": lambda: w.apply(lambda key, win, items: items),
        "process": lambda: w.process(lambda key, win, items, out: out(items)),
    }[op]()
    result.to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 105), ("k", 4, 110), ("k", 0, 200)])
        assert records(d, "out") == [("k", 109, _win("k", 100, 110, expected[0])),
                                     ("k", 119, _win("k", 110, 120, expected[1]))]


def test_with_window_sessions_and_window_fn():
    app, keyed = keyed_app()
    (keyed.window(EventTimeSessionWindows.with_gap(10)).with_window()
     .reduce(lambda a, b: a + b, window_fn=lambda key, win, r, out: (out(r), out(r * 10))).to(
        "out", value_serde=serdes.JSON))
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [("a", 1, 100), ("b", 2, 100), ("a", 4, 105), ("a", 0, 500), ("b", 0, 500)])
        assert sorted(records(d, "out"), key=str) == sorted([
            ("a", 114, _win("a", 100, 115, 5)), ("a", 114, _win("a", 100, 115, 50)),
            ("b", 109, _win("b", 100, 110, 2)), ("b", 109, _win("b", 100, 110, 20))], key=str)


# --- 4. explicit triggers: EventTimeTrigger, ProcessingTimeTrigger, PurgingTrigger ------------------------

def test_explicit_time_triggers_match_the_default():
    from kstreamlet.windowing import EventTimeTrigger, ProcessingTimeTrigger, TumblingProcessingTimeWindows
    outs = []
    for trig in (None, EventTimeTrigger.create()):
        app, keyed = keyed_app()
        w = keyed.window(TumblingEventTimeWindows.of(10)).allowed_lateness(20)
        if trig is not None:
            w = w.trigger(trig)
        w.sum().to("out", value_serde=serdes.JSON)
        with TopologyTestDriver(app) as d:
            pipe(d, [("k", 1, 100), ("k", 2, 115), ("k", 4, 105), ("k", 8, 200)])
            outs.append(records(d, "out"))
    assert outs[0] == outs[1] == [("k", 109, 1), ("k", 109, 5), ("k", 119, 2)]
    app, keyed = keyed_app()
    keyed.window(TumblingProcessingTimeWindows.of(100)).trigger(ProcessingTimeTrigger.create()).count().to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, wall_clock_ms=1000) as d:
        pipe(d, [("k", 1, 0), ("k", 2, 0)])
        d.advance_wall_clock_time(100)
        assert d.output_topic("out", value_serde=serdes.INT64).read_values_to_list() == [2]
    with pytest.raises(ValueError, match="processing-time trigger cannot fire event-time windows"):
        keyed.window(TumblingEventTimeWindows.of(10)).trigger(ProcessingTimeTrigger.create())
    with pytest.raises(ValueError, match="event-time trigger cannot fire processing-time windows"):
        keyed.window(TumblingProcessingTimeWindows.of(10)).trigger(EventTimeTrigger.create())


def test_purging_event_time_trigger_late_firings_emit_only_new_elements():
    from kstreamlet.windowing import EventTimeTrigger, PurgingTrigger
    app, keyed = keyed_app()
    (keyed.window(TumblingEventTimeWindows.of(10)).allowed_lateness(20)
     .trigger(PurgingTrigger.of(EventTimeTrigger.create())).process(lambda k, w, items, out: out(items))
     .to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 101), ("j", 3, 102), ("k", 0, 115), ("j", 0, 115)])
        assert sorted(records(d, "out")) == [("j", 109, [3]), ("k", 109, [1, 2])]
        pipe(d, [("k", 4, 105), ("k", 5, 106)])  # late, within the lateness: FIRE_AND_PURGE each time
        assert records(d, "out") == [("k", 109, [4]), ("k", 109, [5])]


def test_purging_count_trigger_fires_disjoint_groups():
    from kstreamlet.windowing import CountTrigger, PurgingTrigger
    app, keyed = keyed_app()
    (keyed.window(EventTimeSessionWindows.with_gap(100)).trigger(PurgingTrigger.of(CountTrigger.of(2))).sum()
     .to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 110), ("k", 4, 120), ("k", 8, 130), ("k", 16, 140), ("k", 0, 1000)])
        # Without purging: 3, 15 (contents kept); purged: each pair alone. The lone 16 never fires.
        assert [v for _, _, v in records(d, "out")] == [3, 12]


def test_purging_continuous_trigger_emits_deltas():
    from kstreamlet.windowing import ContinuousEventTimeTrigger, PurgingTrigger
    app, keyed = keyed_app()
    (keyed.window(TumblingEventTimeWindows.of(100)).trigger(PurgingTrigger.of(ContinuousEventTimeTrigger.of(20)))
     .sum().to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 5), ("k", 2, 10), ("k", 4, 21)])  # wm 20: the firing at 20 -> 7, purged
        assert records(d, "out") == [("k", 99, 7)]
        pipe(d, [("k", 8, 45)])  # wm 44: firing at 40 -> only the new 8
        assert records(d, "out") == [("k", 99, 8)]
        pipe(d, [("k", 16, 70), ("k", 32, 75)])  # firing at 60 -> 16
        assert records(d, "out") == [("k", 99, 16)]
        pipe(d, [("k", 0, 300)])  # firing at 80 -> 32; at the end (99): nothing left, no firing
        assert records(d, "out") == [("k", 99, 32)]


def test_purging_trigger_rejects_non_triggers():
    from kstreamlet.windowing import PurgingTrigger
    with pytest.raises(TypeError, match="PurgingTrigger.of takes a Trigger"):
        PurgingTrigger.of("count")  # type: ignore[arg-type]


def test_purging_trigger_on_sessions_late_merge():
    from kstreamlet.windowing import EventTimeTrigger, PurgingTrigger
    app, keyed = keyed_app()
    (keyed.window(EventTimeSessionWindows.with_gap(10)).allowed_lateness(50)
     .trigger(PurgingTrigger.of(EventTimeTrigger.create())).process(lambda k, w, items, out: out([w.start, items]))
     .to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 100), ("k", 2, 130)])  # wm 129: [100,110) fires [1], purged
        assert records(d, "out") == [("k", 109, [100, [1]])]
        pipe(d, [("k", 4, 105)])  # extends the purged session to [100,115): fires only the new element
        assert records(d, "out") == [("k", 114, [100, [4]])]
        pipe(d, [("k", 8, 95)])  # [95,105) merges with the purged [100,115): fires [8] only
        assert records(d, "out") == [("k", 114, [95, [8]])]

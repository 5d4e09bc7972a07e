"""Join bounds, join lateness and state TTL accept a datetime.timedelta (kstreamlet.eventtime.to_millis)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kstreamlet import App, KeyedProcessFunction, serdes
from kstreamlet.dsl.joins import IntervalJoinBuilder
from kstreamlet.state.codec import MAX_TIMESTAMP
from kstreamlet.state.keyed import StateTtlConfig, ValueStateDescriptor
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import TumblingEventTimeWindows
from tests.unit.test_joins_broadcast_seed import join_app, run
from tests.unit.test_joins_flink_buffers import TS

MS = timedelta(milliseconds=1)


def interval_app(lower, upper):
    app = App(application_id="ijd", bootstrap_servers="127.0.0.1:1")
    orange = app.stream("orange", value_serde=serdes.JSON, watermarks=TS)
    green = app.stream("green", value_serde=serdes.JSON, watermarks=TS)
    (orange.key_by(lambda v: v["k"], key_serde=serdes.STR)
        .interval_join(green.key_by(lambda v: v["k"], key_serde=serdes.STR)).between(lower, upper)
        .apply(lambda a, b: [a["ts"], b["ts"]] if a["k"] == "key" else None).to("out"))
    return app


def test_interval_join_between_timedeltas_is_the_same_as_milliseconds():
    o_ts, g_ts = range(0, 20000, 700), range(0, 20000, 900)
    by_ms = run(interval_app(-1500, 1000), o_ts, g_ts, flush_ts=100_000)
    by_td = run(interval_app(timedelta(seconds=-1.5), timedelta(seconds=1)), o_ts, g_ts, flush_ts=100_000)
    assert by_td == by_ms
    assert sorted(by_td) == sorted([o, g] for o in o_ts for g in g_ts if o - 1500 <= g <= o + 1000)


def test_interval_join_bounds_reject_floats_and_reversed_timedeltas():
    app = App(application_id="ijd", bootstrap_servers="127.0.0.1:1")
    a, b = app.stream("a", value_serde=serdes.JSON), app.stream("b", value_serde=serdes.JSON)
    with pytest.raises(TypeError):
        IntervalJoinBuilder(a, b).between(-1.5, 1)
    with pytest.raises(ValueError):
        IntervalJoinBuilder(a, b).between(timedelta(seconds=1), 999)


def test_window_join_allowed_lateness_timedelta():
    def build(o, g):
        (o.join(g).where(lambda v: v["k"], key_serde=serdes.STR).equal_to(lambda v: v["k"])
         .window(TumblingEventTimeWindows.of(2)).allowed_lateness(5 * MS)
         .apply(lambda a, b: [a["ts"], b["ts"]] if a["k"] == "key" else None).to("out"))

    with TopologyTestDriver(join_app(build)) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        o.pipe_input({"k": "key", "ts": 0})
        for t in (5, 9):
            o.pipe_input({"k": "x", "ts": t})
            g.pipe_input({"k": "x", "ts": t})
            g.pipe_input({"k": "key", "ts": 1})  # at watermark 4: within 5 ms; at 8: too late
        o.pipe_input({"k": "x", "ts": 100})
        g.pipe_input({"k": "x", "ts": 100})
        assert d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() == [[0, 1]]
    with pytest.raises(ValueError):
        join_app(lambda o, g: o.join(g).allowed_lateness(-MS))


def test_state_ttl_config_takes_a_timedelta():
    assert StateTtlConfig(timedelta(seconds=10)).ttl_ms == 10_000
    assert StateTtlConfig(timedelta(microseconds=1500)).ttl_ms == 1  # sub-ms rounded down, at least 1
    assert StateTtlConfig(timedelta.max).ttl_ms == timedelta.max // MS < MAX_TIMESTAMP
    for bad in (timedelta(0), -MS):
        with pytest.raises(ValueError):
            StateTtlConfig(bad)


class TtlCounter(KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor(
            "count", serdes.INT64, default=0, ttl=StateTtlConfig(timedelta(seconds=10))))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ctx.emit(self.count.value())


def test_state_ttl_timedelta_expires_state():
    app = App(application_id="ttl", bootstrap_servers="127.0.0.1:1")
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, key_serde=serdes.STR).process(TtlCounter()).to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, wall_clock_ms=0) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("k")
        d.advance_wall_clock_time(9_999)
        inp.pipe_input("k")  # expires at 19.999 s
        d.advance_wall_clock_time(10_000)
        inp.pipe_input("k")
        assert d.output_topic("out", value_serde=serdes.INT64).read_values_to_list() == [1, 2, 1]

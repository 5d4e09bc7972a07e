"""Timestamp arithmetic near the int64 limits saturates (Flink's WindowOperator.cleanupTime, TtlUtils)."""

from __future__ import annotations

import pytest

from kstreamlet import App, KeyedProcessFunction, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.runtime.timers import EVENT, PROC, TimerService
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.codec import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    decode_timestamp,
    decode_window,
    encode_timestamp,
    saturating_add,
    window_key,
)
from kstreamlet.state.keyed import StateTtlConfig, ValueStateDescriptor
from kstreamlet.state.store import Store
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import TumblingEventTimeWindows

TS = WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v["ts"])


def test_saturating_add_and_the_sortable_codecs_clamp_to_int64():
    assert saturating_add(MAX_TIMESTAMP - 5, 10) == MAX_TIMESTAMP
    assert saturating_add(MIN_TIMESTAMP + 5, -10) == MIN_TIMESTAMP
    assert saturating_add(100, 2**64) == MAX_TIMESTAMP
    assert saturating_add(100, -50) == 50
    assert decode_timestamp(encode_timestamp(2**63 + 10)) == MAX_TIMESTAMP
    assert decode_timestamp(encode_timestamp(-(2**63) - 10)) == MIN_TIMESTAMP
    assert decode_window(window_key(b"p", MAX_TIMESTAMP - 1, 2**63 + 4), 1) == (MAX_TIMESTAMP - 1, MAX_TIMESTAMP)
    assert encode_timestamp(-1) < encode_timestamp(0) < encode_timestamp(MAX_TIMESTAMP)


def test_timers_past_int64_saturate_and_can_be_deleted():
    store = Store("timers", 0, MemoryBackend(), None, None)
    key = [b"k"]
    t = TimerService(store, lambda: key[0], lambda: 0, lambda: 0)
    t.register_event_time(2**63 + 1000)
    t.register_event_time(MAX_TIMESTAMP)  # the same (saturated) timer: registered once
    t.register_processing_time(2**64)
    t.register_event_time(-(2**63) - 1)
    assert t.next_due(EVENT) == MIN_TIMESTAMP
    t.delete_event_time(-(2**63) - 7)  # deleting with any time below MIN deletes the saturated timer
    assert t.next_due(EVENT) == MAX_TIMESTAMP and t.next_due(PROC) == MAX_TIMESTAMP
    fired = []
    assert t.fire(EVENT, MAX_TIMESTAMP, lambda ts, k: fired.append((ts, k))) == 1
    assert fired == [(MAX_TIMESTAMP, b"k")]
    t.delete_processing_time(2**63 + 5)
    assert t.next_due(PROC) is None
    t.reload()  # the stored entries read back
    assert t.next_due(EVENT) is None and t.next_due(PROC) is None


class FarTimers(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timers.register_event_time(ctx.timestamp + 2**63)  # past Long.MAX: saturates
        ctx.timers.register_processing_time(ctx.timers.current_processing_time() + 2**63)
        ctx.timers.register_event_time(MAX_TIMESTAMP - 2)
        ctx.emit("ok")

    def on_timer(self, ts, ctx):
        ctx.emit(f"timer {ts}")


def test_a_timer_near_long_max_fires_and_one_past_it_does_not_fail():
    app = App(application_id="ts", bootstrap_servers="127.0.0.1:1")
    app.stream("in", value_serde=serdes.JSON, watermarks=TS).key_by(lambda v: "k", key_serde=serdes.STR).process(
        FarTimers()).to("out", value_serde=serdes.STR)
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", value_serde=serdes.JSON)
        out = d.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input({"ts": 1_000}, timestamp=1_000)
        assert out.read_values_to_list() == ["ok"]
        inp.pipe_input({"ts": MAX_TIMESTAMP}, timestamp=1_001)  # watermark MAX - 1
        assert out.read_values_to_list() == ["ok", f"timer {MAX_TIMESTAMP - 2}"]


class HugeTtl(KeyedProcessFunction):
    def __init__(self, ttl_s):
        self.ttl_s = ttl_s

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", serdes.INT64, default=0, ttl=StateTtlConfig(self.ttl_s)))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ctx.emit(self.count.value())


@pytest.mark.parametrize("ttl_s", [2**63 / 1000, float("inf"), 2**80])
def test_a_ttl_of_2_pow_63_ms_saturates_and_never_expires(ttl_s):
    assert StateTtlConfig(ttl_s).ttl_ms == MAX_TIMESTAMP
    app = App(application_id="ts", bootstrap_servers="127.0.0.1:1")
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, key_serde=serdes.STR).process(HugeTtl(ttl_s)).to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, wall_clock_ms=1_700_000_000_000) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("k")
        d.advance_wall_clock_time(10**15)
        inp.pipe_input("k")
        assert d.output_topic("out", value_serde=serdes.INT64).read_values_to_list() == [1, 2]
        assert d.dlq_topic().is_empty(), d.dlq_topic().read_records_to_list()


def test_ttl_must_be_positive():
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            StateTtlConfig(bad)
    assert StateTtlConfig(0.0001).ttl_ms == 1


def test_a_window_with_allowed_lateness_long_max_does_not_fail():
    # max timestamp + lateness is past Long.MAX: the cleanup timer saturates (Flink's cleanupTime),
    # so the window keeps accepting late elements.
    app = App(application_id="ts", bootstrap_servers="127.0.0.1:1")
    (app.stream("in", value_serde=serdes.JSON, watermarks=TS).key_by(lambda v: v["k"], key_serde=serdes.STR)
        .window(TumblingEventTimeWindows.of(10)).allowed_lateness(MAX_TIMESTAMP).count()
        .to("out", value_serde=serdes.INT64))
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", value_serde=serdes.JSON)
        for ts in (5, 100, 3):  # 100 fires [0, 10); 3 is late but within the lateness: fires again
            inp.pipe_input({"k": "a", "ts": ts})
        assert d.output_topic("out", value_serde=serdes.INT64).read_values_to_list() == [1, 2]
        assert d.dlq_topic().is_empty(), d.dlq_topic().read_records_to_list()

"""Lateness outside the window operator is Flink's rule: ``ts < watermark`` is late, ``ts == watermark`` is not."""

from __future__ import annotations

from kstreamlet import App, KeyedProcessFunction, serdes
from kstreamlet.testing import TopologyTestDriver
from tests.unit.test_joins_flink_buffers import TS, _advance, interval_join_app


def test_interval_join_element_at_the_watermark_is_not_late():
    # left.ts - 2 <= right.ts <= left.ts + 1 (between(-1, 2) from the left's view: r in [l - 1, l + 2]).
    with TopologyTestDriver(interval_join_app()) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        out = d.output_topic("out", value_serde=serdes.JSON)
        o.pipe_input({"k": "key", "ts": 9})
        _advance(o, g, 13)  # watermark 12 (orange 9 matches green up to 11)
        assert d.watermark("orange") == 12
        g.pipe_input({"k": "key", "ts": 12})  # at the watermark: not late, but no left in [10, 13]... yet
        o.pipe_input({"k": "key", "ts": 12})  # at the watermark: joins green 12
        g.pipe_input({"k": "key", "ts": 11})  # behind the watermark: late, dropped
        assert out.read_values_to_list() == [[12, 12]]


def test_interval_join_keeps_a_buffer_while_an_element_at_the_watermark_can_still_match_it():
    with TopologyTestDriver(interval_join_app()) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        out = d.output_topic("out", value_serde=serdes.JSON)
        o.pipe_input({"k": "key", "ts": 9})  # matches green 8..11
        _advance(o, g, 12)  # watermark 11
        g.pipe_input({"k": "key", "ts": 11})  # at the watermark: orange 9 must still be buffered
        assert out.read_values_to_list() == [[9, 11]]
        _advance(o, g, 13)  # watermark 12 > 9 + 2: orange 9 is gone
        _advance(o, g, 100)
        assert not [k for k in d.key_value_store("ij-buffers") if b"key" in k], "buffers are cleaned"


class Late(KeyedProcessFunction):
    uses_event_time = True

    def process_element(self, value, ctx):
        ctx.emit([ctx.timestamp, ctx.current_watermark, ctx.is_late])


def test_ctx_is_late_is_ts_behind_the_watermark():
    app = App(application_id="late", bootstrap_servers="127.0.0.1:1")
    app.stream("in", value_serde=serdes.JSON, watermarks=TS).key_by(lambda v: "k", key_serde=serdes.STR).process(
        Late()).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", value_serde=serdes.JSON)
        for ts in (10, 9, 8):
            inp.pipe_input({"ts": ts})
        assert d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() == [
            [10, -(2**63), False], [9, 9, False], [8, 9, True]]

"""Interval join late data: Flink's sideOutputLeftLateData / sideOutputRightLateData."""

from __future__ import annotations

from kstreamlet import App, serdes
from kstreamlet.testing import TopologyTestDriver
from tests.unit.test_joins_flink_buffers import TS, _advance


def late_app(left_tag="late-left", right_tag="late-right", lower=-1, upper=2):
    app = App(application_id="ijl", bootstrap_servers="127.0.0.1:1")
    orange = app.stream("orange", value_serde=serdes.JSON, watermarks=TS)
    green = app.stream("green", value_serde=serdes.JSON, watermarks=TS)
    b = (orange.key_by(lambda v: v["k"], key_serde=serdes.STR)
         .interval_join(green.key_by(lambda v: v["k"], key_serde=serdes.STR)).between(lower, upper))
    if left_tag:
        b = b.side_output_left_late_data(left_tag)
    if right_tag:
        b = b.side_output_right_late_data(right_tag)
    joined = b.apply(lambda a, g: [a["ts"], g["ts"]] if a["k"] == "key" else None, name="ij")
    joined.to("out")
    if left_tag:
        joined.side_output(left_tag).to("late-left-out", value_serde=serdes.JSON)
    if right_tag and right_tag != left_tag:
        joined.side_output(right_tag).to("late-right-out", value_serde=serdes.JSON)
    return app


def test_late_elements_of_each_side_go_to_their_side_output_with_key_and_timestamp():
    with TopologyTestDriver(late_app()) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        _advance(o, g, 11)  # watermark 10
        o.pipe_input({"k": "key", "ts": 10})  # at the watermark: on time
        o.pipe_input({"k": "key", "ts": 9, "v": "lo"})  # late left
        g.pipe_input({"k": "key", "ts": 8, "v": "lg"})  # late right
        g.pipe_input({"k": "key", "ts": 11})  # on time, joins orange 10
        assert d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() == [[10, 11]]
        left = d.output_topic("late-left-out", key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()
        right = d.output_topic("late-right-out", key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()
        assert [(r.key, r.value, r.timestamp) for r in left] == [("key", {"k": "key", "ts": 9, "v": "lo"}, 9)]
        assert [(r.key, r.value, r.timestamp) for r in right] == [("key", {"k": "key", "ts": 8, "v": "lg"}, 8)]


def test_one_tag_for_both_sides_and_untagged_side_still_drops():
    with TopologyTestDriver(late_app("late", "late")) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        _advance(o, g, 11)
        o.pipe_input({"k": "key", "ts": 3})
        g.pipe_input({"k": "key", "ts": 4})
        assert [v["ts"] for v in d.output_topic("late-left-out", value_serde=serdes.JSON).read_values_to_list()] == [3, 4]
    with TopologyTestDriver(late_app(None, "late-right")) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        _advance(o, g, 11)
        o.pipe_input({"k": "key", "ts": 3})  # no left tag: dropped
        g.pipe_input({"k": "key", "ts": 4})
        assert [v["ts"] for v in d.output_topic("late-right-out", value_serde=serdes.JSON).read_values_to_list()] == [4]
        assert d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() == []

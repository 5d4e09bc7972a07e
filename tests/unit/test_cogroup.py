"""Windowed co_group (Flink's CoGroupedStreams, as in CoGroupJoinITCase), through the driver."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kstreamlet import App, serdes
from kstreamlet.dsl.joins import CoGroupBuilder
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import EventTimeSessionWindows, TumblingEventTimeWindows

TS = WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v[1])


def co_group_app(finish, assigner=None, lateness=None):
    app = App(application_id="cg", bootstrap_servers="127.0.0.1:1")
    first = app.stream("first", value_serde=serdes.JSON, watermarks=TS)
    second = app.stream("second", value_serde=serdes.JSON, watermarks=TS)
    b = (first.co_group(second).where(lambda v: v[0], key_serde=serdes.STR).equal_to(lambda v: v[0])
         .window(assigner or TumblingEventTimeWindows.of(3)))
    if lateness is not None:
        b = b.allowed_lateness(lateness)
    finish(b).to("out", key_serde=serdes.STR, value_serde=serdes.JSON)
    return app


def fmt(lefts, rights):
    return ["F:" + "".join(f"({k},{t})" for k, t in lefts) + " S:" + "".join(f"({k},{t})" for k, t in rights)]


FIRST = [("a", 0), ("a", 1), ("a", 2), ("b", 3), ("b", 4), ("b", 5), ("a", 6), ("a", 7), ("a", 8)]
SECOND = [("a", 0), ("a", 1), ("b", 3), ("c", 6), ("c", 7), ("c", 8)]


def pipe_both_partitions(topic, value):
    for p in (0, 1):
        topic.pipe_input(value, partition=p)


def test_co_group_once_per_key_and_window_including_one_sided_keys_on_two_partitions():
    # CoGroupJoinITCase.testCoGroup: tumbling windows of 3 ms.
    with TopologyTestDriver(co_group_app(lambda b: b.apply(fmt)), partitions={"first": 2, "second": 2}) as d:
        f, s = d.input_topic("first", value_serde=serdes.JSON), d.input_topic("second", value_serde=serdes.JSON)
        for i, v in enumerate(FIRST):
            f.pipe_input(list(v), partition=i % 2)
        for i, v in enumerate(SECOND):
            s.pipe_input(list(v), partition=i % 2)
        out = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON)
        pipe_both_partitions(f, ["z", 100])
        pipe_both_partitions(s, ["z", 100])
        recs = out.read_records_to_list()
    got = sorted((r.key, r.value, r.timestamp) for r in recs)
    assert got == sorted([
        ("a", "F:(a,0)(a,1)(a,2) S:(a,0)(a,1)", 2),
        ("b", "F:(b,3)(b,4)(b,5) S:(b,3)", 5),
        ("a", "F:(a,6)(a,7)(a,8) S:", 8),
        ("c", "F: S:(c,6)(c,7)(c,8)", 8),
    ])


def test_process_gets_key_window_and_both_lists_and_may_emit_many():
    def count(key, w, lefts, rights, out):
        out([key, w.start, w.end, len(lefts), len(rights)])
        if not lefts or not rights:
            out([key, "one-sided"])

    with TopologyTestDriver(co_group_app(lambda b: b.process(count))) as d:
        f, s = d.input_topic("first", value_serde=serdes.JSON), d.input_topic("second", value_serde=serdes.JSON)
        for v in FIRST:
            f.pipe_input(list(v))
        for v in SECOND:
            s.pipe_input(list(v))
        f.pipe_input(["z", 100])
        s.pipe_input(["z", 100])
        got = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
    assert sorted(map(str, got)) == sorted(map(str, [
        ["a", 0, 3, 3, 2], ["b", 3, 6, 3, 1], ["a", 6, 9, 3, 0], ["a", "one-sided"],
        ["c", 6, 9, 0, 3], ["c", "one-sided"]]))


def test_co_group_session_windows_merge_both_sides():
    with TopologyTestDriver(co_group_app(lambda b: b.apply(fmt), EventTimeSessionWindows.with_gap(2))) as d:
        f, s = d.input_topic("first", value_serde=serdes.JSON), d.input_topic("second", value_serde=serdes.JSON)
        f.pipe_input(["a", 0])
        s.pipe_input(["a", 1])
        f.pipe_input(["a", 2])  # one session [0, 4)
        s.pipe_input(["a", 10])  # another, right only
        f.pipe_input(["z", 100])
        s.pipe_input(["z", 100])
        got = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
    assert got == ["F:(a,0)(a,2) S:(a,1)", "F: S:(a,10)"]


def test_allowed_lateness_as_timedelta_fires_again_with_all_elements():
    app = co_group_app(lambda b: b.apply(fmt), lateness=timedelta(milliseconds=5))
    with TopologyTestDriver(app) as d:
        f, s = d.input_topic("first", value_serde=serdes.JSON), d.input_topic("second", value_serde=serdes.JSON)
        f.pipe_input(["a", 0])
        f.pipe_input(["z", 4])
        s.pipe_input(["z", 4])  # watermark 3: [0, 3) fires
        s.pipe_input(["a", 1])  # late but within 5 ms: fires again with both
        f.pipe_input(["z", 9])
        s.pipe_input(["z", 9])  # watermark 8 >= 2 + 5: window gone
        s.pipe_input(["a", 2])  # too late: dropped
        f.pipe_input(["z", 100])
        s.pipe_input(["z", 100])
        got = [v for v in d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() if "(a," in v]
    assert got == ["F:(a,0) S:", "F:(a,0) S:(a,1)"]


def test_co_group_needs_where_equal_to_and_window():
    app = App(application_id="cg", bootstrap_servers="127.0.0.1:1")
    a, b = app.stream("first", value_serde=serdes.JSON), app.stream("second", value_serde=serdes.JSON)
    with pytest.raises(ValueError):
        CoGroupBuilder(a, b).where(lambda v: v).equal_to(lambda v: v).apply(fmt)
    with pytest.raises(ValueError):
        CoGroupBuilder(a, b).allowed_lateness(timedelta(milliseconds=-1))

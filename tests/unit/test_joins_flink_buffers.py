"""Interval join buffers: cleaned by the watermark, and timestamps near Long.MAX saturate."""

from __future__ import annotations

from types import SimpleNamespace

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.operators.joins import LEFT, RIGHT, IntervalJoinOperator
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.codec import BIAS, MAX_TIMESTAMP, TIMESTAMP, encode_list, key_prefix
from kstreamlet.state.store import Store
from kstreamlet.testing import TopologyTestDriver

TS = WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v["ts"])


def interval_join_app(lower=-1, upper=2):
    app = App(application_id="ij", bootstrap_servers="127.0.0.1:1")
    orange = app.stream("orange", value_serde=serdes.JSON, watermarks=TS)
    green = app.stream("green", value_serde=serdes.JSON, watermarks=TS)
    (orange.key_by(lambda v: v["k"], key_serde=serdes.STR)
        .interval_join(green.key_by(lambda v: v["k"], key_serde=serdes.STR)).between(lower, upper)
        .apply(lambda a, b: [a["ts"], b["ts"]] if a["k"] == "key" else None, name="ij").to("out"))
    return app


def _advance(o, g, ts):
    """Both inputs to watermark ``ts - 1`` (records of another key)."""
    o.pipe_input({"k": "x", "ts": ts})
    g.pipe_input({"k": "x", "ts": ts})


def test_interval_join_cleans_up_its_buffers():
    with TopologyTestDriver(interval_join_app(-3, -1)) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        for ts in range(10):
            o.pipe_input({"k": "key", "ts": ts})
            g.pipe_input({"k": "key", "ts": ts})
        _advance(o, g, 50)
        _advance(o, g, 60)
        assert not [k for k in d.key_value_store("ij-buffers") if b"key" in k]
        out = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
        assert sorted(out) == sorted([[lt, rt] for lt in range(10) for rt in range(10) if lt - 3 <= rt <= lt - 1])


def test_interval_join_near_long_max_does_not_fail():
    with TopologyTestDriver(interval_join_app(-1, 2**63)) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        o.pipe_input({"k": "key", "ts": MAX_TIMESTAMP - 1})
        g.pipe_input({"k": "key", "ts": MAX_TIMESTAMP})
        g.pipe_input({"k": "key", "ts": 5})
        assert sorted(d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()) == [
            [MAX_TIMESTAMP - 1, MAX_TIMESTAMP]]


def test_buffers_of_an_earlier_version_are_indexed_and_swept_by_segment():
    # Buffers written by an earlier version (one timer per element, same store layout) are found by
    # the index's scan on first use; a timer of either kind sweeps every segment the watermark passed.
    op = IntervalJoinOperator(-1, 2, lambda a, b: None, serdes.JSON, serdes.JSON)
    op.step = 1
    store = Store("b", 0, MemoryBackend(), None, None)
    ctx_store = SimpleNamespace(raw_store=lambda name: store)
    op.open(ctx_store)  # type: ignore[arg-type]
    registered: list[int] = []
    ctx = SimpleNamespace(key_bytes=b"k", current_watermark=0,
                          timers=SimpleNamespace(register_event_time=registered.append))
    prefix = key_prefix(b"k")
    left, right = prefix + bytes((LEFT,)) + TIMESTAMP.pack(9 + BIAS), prefix + bytes((RIGHT,)) + TIMESTAMP.pack(5 + BIAS)
    store.put(left, encode_list([b"1"]))
    store.put(right, encode_list([b"2"]))
    ctx.current_watermark = 6
    op.on_timer(6, ctx)  # right 5's old timer (5 - lower): it may go at watermark 5 - lower + 1 = 7
    assert store.get(right) is not None and registered == [7]
    ctx.current_watermark = 7
    op.on_timer(7, ctx)
    assert store.get(right) is None and store.get(left) is not None and registered == [7, 12]
    ctx.current_watermark = 11
    op.on_timer(11, ctx)  # left 9's old timer (9 + upper): it may go at 9 + upper + 1 = 12
    assert store.get(left) is not None and registered == [7, 12]
    ctx.current_watermark = 12
    op.on_timer(12, ctx)
    assert store.get(left) is None and registered == [7, 12]


def test_interval_join_registers_one_timer_per_segment_not_per_element():
    with TopologyTestDriver(interval_join_app(-2000, 3000)) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        for ts in range(0, 20_000, 10):
            o.pipe_input({"k": f"key{ts % 7}", "ts": ts})
            g.pipe_input({"k": f"key{ts % 5}", "ts": ts - 500})
        timers = d.key_value_store("ij-timers")
        assert 0 < len(timers) <= 3, len(timers)  # the next cleanup, not one per buffered element
        buffers = d.key_value_store("ij-buffers")
        # Kept: what the watermark (~19,490) has not passed by a whole segment (1,250 ms) plus the span.
        assert 0 < len(buffers) < 2 * (3000 + 2000 + 1250) // 10, len(buffers)


def test_an_element_finds_the_other_sides_buffers_after_a_restart_and_an_abort():
    # An element reads the other side's entries through the operator's index (the store keys per
    # key and side); the index is rebuilt from the store after a restart and after an aborted
    # checkpoint, so buffers written before either still match (2 partitions behind key_by).
    with TopologyTestDriver(interval_join_app(-10, 10), partitions={"orange": 2, "green": 2}) as d:
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        out = d.output_topic("out", value_serde=serdes.JSON)
        o.pipe_input({"k": "key", "ts": 100})
        d.restart()
        g.pipe_input({"k": "key", "ts": 105})
        assert out.read_values_to_list() == [[100, 105]]
        try:
            with d.one_checkpoint():
                g.pipe_input({"k": "key", "ts": 106})
                raise RuntimeError("abort this checkpoint")
        except RuntimeError:
            pass
        assert out.read_values_to_list() == []  # aborted: not visible
        g.pipe_input({"k": "key", "ts": 107})
        o.pipe_input({"k": "key", "ts": 108})  # matches 105 and 107 (106 was aborted)
        assert sorted(out.read_values_to_list()) == [[100, 107], [108, 105], [108, 107]]


def test_matches_come_in_the_other_sides_timestamp_order_when_its_entries_arrive_out_of_order():
    # The other side's entries of a key are kept in timestamp order however they arrive (each
    # element reads the ones in its range by key); a sweep then removes them from the store.
    app = App(application_id="ij", bootstrap_servers="127.0.0.1:1")
    ts = WatermarkStrategy.for_bounded_out_of_orderness(100).with_timestamp_assigner(lambda v: v["ts"])
    orange = app.stream("orange", value_serde=serdes.JSON, watermarks=ts)
    green = app.stream("green", value_serde=serdes.JSON, watermarks=ts)
    (orange.key_by(lambda v: v["k"], key_serde=serdes.STR)
        .interval_join(green.key_by(lambda v: v["k"], key_serde=serdes.STR)).between(-50, 50)
        .apply(lambda a, b: [a["ts"], b["ts"]] if a["k"] == "key" else None, name="ij").to("out"))
    with TopologyTestDriver(app) as d:  # one partition: the watermark of every task moves
        o, g = d.input_topic("orange", value_serde=serdes.JSON), d.input_topic("green", value_serde=serdes.JSON)
        out = d.output_topic("out", value_serde=serdes.JSON)
        for t in (1040, 1010, 1030, 1010, 1020):  # 1010 twice: one entry holding both
            o.pipe_input({"k": "key", "ts": t})
        g.pipe_input({"k": "key", "ts": 1025})
        assert out.read_values_to_list() == [[1010, 1025], [1010, 1025], [1020, 1025], [1030, 1025], [1040, 1025]]
        _advance(o, g, 1175)  # watermark 1074: the left entries up to 1024 (+ upper 50) may go
        _advance(o, g, 1400)  # and a sweep that takes them has run
        g.pipe_input({"k": "key", "ts": 1080})  # late now? watermark 1299: yes, dropped
        assert out.read_values_to_list() == []
        left = [k for k in d.key_value_store("ij-buffers") if b"key" in k and k[4 + 3] == LEFT]
        assert left == [], left

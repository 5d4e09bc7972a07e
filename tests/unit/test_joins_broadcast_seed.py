"""The seed's join and broadcast examples (002_…txt, 双流Join / BroadcastState), through the driver."""

from __future__ import annotations

import itertools

import pytest

from kstreamlet import App, serdes
from kstreamlet import BroadcastProcessFunction, KeyedBroadcastProcessFunction
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.state.keyed import ValueStateDescriptor
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import EventTimeSessionWindows, SlidingEventTimeWindows, TumblingEventTimeWindows

TS = WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v["ts"])


def join_app(build):
    app = App(application_id="join", bootstrap_servers="127.0.0.1:1")
    orange = app.stream("orange", value_serde=serdes.JSON, watermarks=TS)
    green = app.stream("green", value_serde=serdes.JSON, watermarks=TS)
    build(orange, green)
    return app


def run(app, orange_ts, green_ts, flush_ts=1000):
    with TopologyTestDriver(app) as d:
        o = d.input_topic("orange", value_serde=serdes.JSON)
        g = d.input_topic("green", value_serde=serdes.JSON)
        events = sorted([("o", t) for t in orange_ts] + [("g", t) for t in green_ts], key=lambda e: e[1])
        for side, t in events:
            (o if side == "o" else g).pipe_input({"k": "key", "ts": t})
        o.pipe_input({"k": "flush", "ts": flush_ts})  # advances the watermark past every window
        g.pipe_input({"k": "flush", "ts": flush_ts})
        return d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()


def window_join(assigner):
    return join_app(lambda o, g: o.join(g).where(lambda v: v["k"], key_serde=serdes.STR).equal_to(lambda v: v["k"])
                    .window(assigner).apply(lambda a, b: [a["ts"], b["ts"]] if a["k"] == "key" else None).to("out"))


def test_tumbling_join_2ms_pairs_per_window_and_window_6_7_emits_nothing():
    out = run(window_join(TumblingEventTimeWindows.of(2)), orange_ts=range(8), green_ts=[0, 1, 3, 4])
    expected = [[o, g] for o in range(8) for g in [0, 1, 3, 4] if o // 2 == g // 2]
    assert sorted(out) == sorted(expected)
    assert not [p for p in out if p[0] in (6, 7)], "window [6,7] has no green element: nothing is emitted"


def test_sliding_join_orange_2_joins_green_3_in_window_2_3_but_not_in_1_2():
    out = run(window_join(SlidingEventTimeWindows.of(2, 1)), orange_ts=range(5), green_ts=[0, 3, 4])
    assert out.count([2, 3]) == 1, f"orange 2 joins green 3 once (window [2,3]); saw {out}"
    assert not [p for p in out if p[0] == 2 and p[1] != 3], "orange 2 joins nothing in window [1,2]"
    windows = [(s, s + 2) for s in range(-1, 6)]
    expected = [[o, g] for (s, e) in windows for o in range(5) for g in [0, 3, 4] if s <= o < e and s <= g < e]
    assert sorted(out) == sorted(expected)


def test_session_join_1ms_gap_third_session_emits_nothing():
    out = run(window_join(EventTimeSessionWindows.with_gap(1)), orange_ts=[0, 1, 4, 8, 9], green_ts=[0, 5])
    assert sorted(out) == [[0, 0], [1, 0], [4, 5]], out


@pytest.mark.parametrize("lower_excl, upper_excl", [(False, False), (True, False), (False, True), (True, True)])
def test_interval_join_minus_2_plus_1_with_inclusive_and_exclusive_bounds(lower_excl, upper_excl):
    def build(o, g):
        b = o.key_by(lambda v: v["k"], key_serde=serdes.STR).interval_join(
            g.key_by(lambda v: v["k"], key_serde=serdes.STR)).between(-2, 1)
        if lower_excl:
            b = b.lower_bound_exclusive()
        if upper_excl:
            b = b.upper_bound_exclusive()
        b.apply(lambda a, c: [a["ts"], c["ts"]] if a["k"] == "key" else None).to("out")

    orange, green = [0, 2, 3, 4, 5, 7], [0, 1, 6, 7]
    out = run(join_app(build), orange, green)
    lo = -2 + (1 if lower_excl else 0)
    hi = 1 - (1 if upper_excl else 0)
    expected = [[o, g] for o, g in itertools.product(orange, green) if o + lo <= g <= o + hi]
    assert sorted(out) == sorted(expected)


def test_left_and_outer_window_joins_emit_unmatched_sides_when_the_window_fires():
    def build(kind):
        def b(o, g):
            getattr(o, kind)(g).where(lambda v: v["k"], key_serde=serdes.STR).equal_to(lambda v: v["k"]).window(
                TumblingEventTimeWindows.of(10)).apply(
                lambda a, c: [a and a["ts"], c and c["ts"]] if (a or c)["k"] == "key" else None).to("out")
        return b

    assert sorted(run(join_app(build("left_join")), [1, 15], [2]), key=str) == sorted([[1, 2], [15, None]], key=str)
    assert sorted(run(join_app(build("outer_join")), [1], [2, 25]), key=str) == sorted([[1, 2], [None, 25]], key=str)


def test_stream_table_join_inner_and_left():
    app = App(application_id="tj", bootstrap_servers="127.0.0.1:1")
    users = app.table("users", key_serde=serdes.STR, value_serde=serdes.JSON)
    clicks = app.stream("clicks", key_serde=serdes.STR, value_serde=serdes.JSON).keyed()
    clicks.join_table(users, lambda c, u: [c["page"], u["name"]]).to("inner")
    clicks.join_table(users, lambda c, u: [c["page"], u and u["name"]], how="left").to("left")
    with TopologyTestDriver(app) as d:
        u = d.input_topic("users", key_serde=serdes.STR, value_serde=serdes.JSON)
        c = d.input_topic("clicks", key_serde=serdes.STR, value_serde=serdes.JSON)
        u.pipe_input({"name": "Ann"}, key="u1", timestamp=1)
        c.pipe_input({"page": "/a"}, key="u1", timestamp=2)
        c.pipe_input({"page": "/b"}, key="u2", timestamp=3)
        u.pipe_input(None, key="u1", timestamp=4)  # tombstone deletes
        c.pipe_input({"page": "/c"}, key="u1", timestamp=5)
        assert d.output_topic("inner", value_serde=serdes.JSON).read_values_to_list() == [["/a", "Ann"]]
        assert d.output_topic("left", value_serde=serdes.JSON).read_values_to_list() == [
            ["/a", "Ann"], ["/b", None], ["/c", None]]


class Enrich(BroadcastProcessFunction):
    """The seed's example: keep configured users' events and add their name and age."""

    def process_element(self, event, ctx):
        user = ctx.broadcast_state.get(event["userID"])
        if user is not None:
            ctx.emit(f"({event['userID']},{event['eventTime']},{event['eventType']},{event['productID']},"
                     f"{user[0]},{user[1]})")

    def process_broadcast_element(self, row, ctx):
        ctx.broadcast_state.put(row["userID"], (row["userName"], row["userAge"]))


def test_broadcast_enrichment_example_user_3_wang_wu_30():
    app = App(application_id="bc", bootstrap_servers="127.0.0.1:1")
    users = app.broadcast("user_info", value_serde=serdes.JSON)
    app.stream("events", value_serde=serdes.JSON).connect(users).process(Enrich()).to("out", value_serde=serdes.STR)
    with TopologyTestDriver(app) as d:
        b = d.input_topic("user_info", value_serde=serdes.JSON)
        for uid, name, age in [("user_1", "张三", 10), ("user_2", "李四", 20), ("user_3", "王五", 30)]:
            b.pipe_input({"userID": uid, "userName": name, "userAge": age})
        ev = d.input_topic("events", value_serde=serdes.JSON)
        ev.pipe_input({"userID": "user_3", "eventTime": "2019-08-17 12:19:47", "eventType": "browse", "productID": 1})
        ev.pipe_input({"userID": "user_9", "eventTime": "2019-08-17 12:19:48", "eventType": "click", "productID": 1})
        assert d.output_topic("out", value_serde=serdes.STR).read_values_to_list() == [
            "(user_3,2019-08-17 12:19:47,browse,1,王五,30)"]


class KeyedRules(KeyedBroadcastProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", serdes.INT64, default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        if ctx.broadcast_state.contains("threshold") and self.count.value() >= ctx.broadcast_state.get("threshold"):
            ctx.emit(f"{ctx.key}:{self.count.value()}")

    def process_broadcast_element(self, value, ctx):
        ctx.broadcast_state.put("threshold", value)
        if value == 0:
            ctx.apply_to_keyed_state(ValueStateDescriptor("count", serdes.INT64, default=0),
                                     lambda key, state: state.update(0))


def test_keyed_broadcast_reads_state_and_applies_to_every_key():
    app = App(application_id="kbc", bootstrap_servers="127.0.0.1:1")
    rules = app.broadcast("rules", value_serde=serdes.JSON)
    app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).keyed().connect(rules).process(KeyedRules()).to(
        "out", value_serde=serdes.STR)
    with TopologyTestDriver(app) as d:
        r = d.input_topic("rules", value_serde=serdes.JSON)
        i = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        r.pipe_input(2)
        for k in ["a", "b", "a", "a"]:
            i.pipe_input("x", key=k)
        r.pipe_input(0)  # resets every key's count
        i.pipe_input("x", key="b")
        assert d.output_topic("out", value_serde=serdes.STR).read_values_to_list() == ["a:2", "a:3", "b:1"]


def test_broadcast_state_is_read_only_on_the_data_side():
    class Bad(BroadcastProcessFunction):
        def process_element(self, value, ctx):
            ctx.broadcast_state.put("x", 1)

        def process_broadcast_element(self, value, ctx):
            pass

    app = App(application_id="ro", bootstrap_servers="127.0.0.1:1", error_policy="fail")
    b = app.broadcast("b", value_serde=serdes.JSON)
    app.stream("in").connect(b).process(Bad()).to("out")
    from kstreamlet import ProcessingError

    with TopologyTestDriver(app) as d, pytest.raises(ProcessingError, match="read-only"):
        d.input_topic("in").pipe_input(b"v")

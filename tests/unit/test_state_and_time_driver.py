"""Keyed state, TTL, timers and watermarks, pinned through the TopologyTestDriver."""

from __future__ import annotations

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet import KeyedProcessFunction
from kstreamlet.state.keyed import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from kstreamlet.testing import TopologyTestDriver


def make_app():
    return App(application_id="st", bootstrap_servers="127.0.0.1:1")


def test_word_count_emits_running_counts_per_word():
    app = make_app()
    (app.stream("lines", value_serde=serdes.STR)
        .flat_map(str.split)
        .key_by(lambda w: w, key_serde=serdes.STR)
        .count()
        .to("counts"))
    with TopologyTestDriver(app) as d:
        d.input_topic("lines", value_serde=serdes.STR).pipe_values(["a b a", "b a"])
        out = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64).read_key_values_to_list()
    assert out == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]


def test_reduce_sum_min_max_per_key():
    app = make_app()
    keyed = app.stream("in", value_serde=serdes.JSON).key_by(lambda r: r["k"], key_serde=serdes.STR, name="by-k")
    keyed.sum("n").to("sum", value_serde=serdes.JSON)
    keyed.min("n").to("min", value_serde=serdes.JSON)
    keyed.max(lambda r: r["n"]).to("max", value_serde=serdes.JSON)
    keyed.reduce(lambda a, b: {"k": a["k"], "n": a["n"] * b["n"]}).to("prod", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        d.input_topic("in", value_serde=serdes.JSON).pipe_values(
            [{"k": "x", "n": 3}, {"k": "y", "n": 10}, {"k": "x", "n": 1}, {"k": "x", "n": 5}])
        read = lambda t: d.output_topic(t, key_serde=serdes.STR, value_serde=serdes.JSON).read_key_values_to_list()  # noqa: E731
        assert read("sum") == [("x", 3), ("y", 10), ("x", 4), ("x", 9)]
        assert read("min") == [("x", 3), ("y", 10), ("x", 1), ("x", 1)]
        assert read("max") == [("x", 3), ("y", 10), ("x", 3), ("x", 5)]
        assert [v["n"] for _, v in read("prod")] == [3, 10, 3, 15]


class Avg:
    def create_accumulator(self):
        return [0, 0]

    def add(self, value, acc):
        return [acc[0] + value, acc[1] + 1]

    def get_result(self, acc):
        return acc[0] / acc[1]

    def merge(self, a, b):
        return [a[0] + b[0], a[1] + b[1]]


class AllStates(KeyedProcessFunction):
    def open(self, ctx):
        self.last = ctx.get_state(ValueStateDescriptor("last", serdes.JSON))
        self.history = ctx.get_list_state(ListStateDescriptor("history", serdes.JSON))
        self.by_kind = ctx.get_map_state(MapStateDescriptor("by-kind", serdes.STR, serdes.INT64))
        self.total = ctx.get_reducing_state(ReducingStateDescriptor("total", lambda a, b: a + b, serdes.JSON))
        self.avg = ctx.get_aggregating_state(AggregatingStateDescriptor("avg", Avg(), serdes.JSON))

    def process_element(self, value, ctx):
        prev = self.last.value()
        self.last.update(value)
        self.history.add(value["n"])
        self.by_kind.put(value["kind"], self.by_kind.get(value["kind"], 0) + 1)
        self.total.add(value["n"])
        self.avg.add(value["n"])
        ctx.emit({"key": ctx.key, "prev": prev and prev["n"], "history": self.history.get(),
                  "kinds": dict(self.by_kind.items()), "total": self.total.get(), "avg": self.avg.get()})


def test_value_list_map_reducing_aggregating_state_are_scoped_by_key():
    app = make_app()
    app.stream("in", value_serde=serdes.JSON).key_by(lambda r: r["user"], key_serde=serdes.STR).process(AllStates()).to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        d.input_topic("in", value_serde=serdes.JSON).pipe_values([
            {"user": "u1", "n": 2, "kind": "a"},
            {"user": "u2", "n": 7, "kind": "b"},
            {"user": "u1", "n": 4, "kind": "b"},
            {"user": "u1", "n": 6, "kind": "a"},
        ])
        out = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
    assert out[3] == {"key": "u1", "prev": 4, "history": [2, 4, 6], "kinds": {"a": 2, "b": 1}, "total": 12, "avg": 4.0}
    assert out[1] == {"key": "u2", "prev": None, "history": [7], "kinds": {"b": 1}, "total": 7, "avg": 7.0}


class TtlCounter(KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", serdes.INT64, default=0, ttl=StateTtlConfig(10)))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ctx.emit(self.count.value())


def test_ttl_expires_state_after_processing_time_passes():
    app = make_app()
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, key_serde=serdes.STR).process(TtlCounter()).to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, wall_clock_ms=0) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        out = d.output_topic("out", value_serde=serdes.INT64)
        inp.pipe_input("k")
        d.advance_wall_clock_time(9_000)
        inp.pipe_input("k")  # written at 9 s: expires at 19 s
        d.advance_wall_clock_time(9_999)
        inp.pipe_input("k")
        d.advance_wall_clock_time(10_001)
        inp.pipe_input("k")  # 20 s after... the last write at 19 s + 10 s > now? last write was at 18.999 s
        assert out.read_values_to_list() == [1, 2, 3, 1]


class EventTimers(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timers.register_event_time(value["fire_at"])

    def on_timer(self, ts, ctx):
        ctx.emit(f"{ctx.key}@{ts}:{ctx.time_domain}")


def test_event_time_timers_fire_in_timestamp_order_when_watermark_passes():
    app = make_app()
    app.stream("in", value_serde=serdes.JSON,
               watermarks=WatermarkStrategy.for_bounded_out_of_orderness(5).with_timestamp_assigner(lambda v: v["ts"])
               ).key_by(lambda v: v["k"], key_serde=serdes.STR).process(EventTimers()).to("out", value_serde=serdes.STR)
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", value_serde=serdes.JSON)
        out = d.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input({"k": "b", "ts": 100, "fire_at": 130})
        inp.pipe_input({"k": "a", "ts": 101, "fire_at": 120})
        inp.pipe_input({"k": "a", "ts": 102, "fire_at": 120})  # same key+time: registered once
        inp.pipe_input({"k": "c", "ts": 103, "fire_at": 110})
        assert out.is_empty(), "watermark 97 fires nothing"
        inp.pipe_input({"k": "z", "ts": 126, "fire_at": 10_000})  # watermark -> 120
        assert out.read_values_to_list() == ["c@110:event", "a@120:event"]
        inp.pipe_input({"k": "z", "ts": 200, "fire_at": 10_000})
        assert out.read_values_to_list() == ["b@130:event"]


class ProcTimer(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timers.register_processing_time(ctx.timers.current_processing_time() + 1000)
        if value == "cancel":
            ctx.timers.delete_processing_time(ctx.timers.current_processing_time() + 1000)

    def on_timer(self, ts, ctx):
        ctx.emit(f"{ctx.key}:{ts}:{ctx.time_domain}")


def test_processing_time_timers_fire_on_wall_clock_and_can_be_deleted():
    app = make_app()
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, key_serde=serdes.STR).process(ProcTimer()).to(
        "out", value_serde=serdes.STR)
    with TopologyTestDriver(app, wall_clock_ms=1_000) as d:
        d.input_topic("in", value_serde=serdes.STR).pipe_values(["x", "cancel"])
        out = d.output_topic("out", value_serde=serdes.STR)
        d.advance_wall_clock_time(999)
        assert out.is_empty()
        d.advance_wall_clock_time(1)
        assert out.read_values_to_list() == ["x:2000:processing"]


def test_watermark_ignores_an_idle_input_after_the_idleness_timeout():
    app = make_app()
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(0).with_idleness(5_000)
    a = app.stream("a", value_serde=serdes.STR, watermarks=strategy)
    b = app.stream("b", value_serde=serdes.STR, watermarks=strategy)
    a.merge(b).keyed().process(EventTimersOnValue()).to("out", value_serde=serdes.STR)
    with TopologyTestDriver(app, wall_clock_ms=0) as d:
        ia = d.input_topic("a", value_serde=serdes.STR)
        out = d.output_topic("out", value_serde=serdes.STR)
        ia.pipe_input("50", timestamp=100, key=None)
        ia.pipe_input("x", timestamp=1000)
        assert out.is_empty() and d.watermark("a") < 0, "input b never had a record: it holds the watermark back"
        d.advance_wall_clock_time(5_000)  # b idle now: watermark follows a alone
        assert d.watermark("a") == 999
        assert out.read_values_to_list() == ["timer 50"]


class EventTimersOnValue(KeyedProcessFunction):
    def process_element(self, value, ctx):
        if value.isdigit():
            ctx.timers.register_event_time(int(value))

    def on_timer(self, ts, ctx):
        ctx.emit(f"timer {ts}")


class OperatorStateFn(KeyedProcessFunction):
    uses_event_time = True  # reads ctx.is_late without registering timers

    def open(self, ctx):
        from kstreamlet.state.keyed import ListStateDescriptor as L

        self.seen = ctx.get_operator_list_state(L("seen", serdes.STR))
        self.union = ctx.get_union_list_state(L("union", serdes.STR))

    def process_element(self, value, ctx):
        self.seen.add(value)
        before = self.union.get()
        self.union.update(before + [value])
        ctx.emit(f"{','.join(self.seen.get())}|{','.join(self.union.get())}|late={ctx.is_late}")


def test_operator_list_and_union_state_are_per_task_not_per_key():
    app = make_app()
    app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).keyed().process(OperatorStateFn()).to(
        "out", value_serde=serdes.STR)
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        inp.pipe_input("a", key="k1", timestamp=10)
        inp.pipe_input("b", key="k2", timestamp=20)
        inp.pipe_input("c", key="k3", timestamp=5)
        out = d.output_topic("out", value_serde=serdes.STR).read_values_to_list()
    assert out == ["a|a|late=False", "a,b|a,b|late=False", "a,b,c|a,b,c|late=True"]

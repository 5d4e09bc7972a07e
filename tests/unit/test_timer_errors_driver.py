"""A failing timer call (``on_timer``, window and join functions) follows ``error_policy``, and
nothing it emitted or wrote survives it; pinned through the TopologyTestDriver.

- ``dlq``: a dead-letter record describes the timer; the timer counts as fired;
- ``skip``: the same without the dead-letter record;
- ``fail``: ProcessingError, and the checkpoint (the timer's deletion with it) is not committed,
  so the timer fires again.
"""

from __future__ import annotations

import pytest

from kstreamlet import App, ProcessingError, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet import KeyedProcessFunction
from kstreamlet.state.keyed import ValueStateDescriptor
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import TumblingEventTimeWindows


class Reminders(KeyedProcessFunction):
    """``"<fire_at>"`` registers an event timer, ``"p<delay>"`` a processing timer; a timer emits
    ``"<key>:partial"``, bumps a per-key counter, registers a follow-up timer, emits again and —
    for keys in ``failing`` — raises. ``"get"`` emits the counter."""

    failing: set[str] = set()

    def open(self, ctx):
        self.fired = ctx.get_state(ValueStateDescriptor("fired", serdes.INT64, default=0))

    def process_element(self, value, ctx):
        if value == "get":
            ctx.emit(f"{ctx.key}:fired={self.fired.value()}")
        elif value.startswith("p"):
            ctx.timers.register_processing_time(ctx.timers.current_processing_time() + int(value[1:]))
        else:
            ctx.timers.register_event_time(int(value))

    def on_timer(self, ts, ctx):
        ctx.emit(f"{ctx.key}:partial@{ts}")
        self.fired.update(self.fired.value() + 1)
        ctx.timers.register_event_time(ts + 1_000_000)  # a follow-up (rolled back with the call)
        if ctx.key in self.failing:
            raise RuntimeError(f"cannot remind {ctx.key}")
        ctx.emit(f"{ctx.key}:done@{ts}")


def reminders_app(policy: str, failing: set[str]) -> App:
    app = App(application_id="rem", bootstrap_servers="127.0.0.1:1", error_policy=policy)
    fn = Reminders()
    fn.failing = failing
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR,
                watermarks=WatermarkStrategy.for_monotonous_timestamps())
        .keyed()
        .process(fn, name="reminders")
        .to("out", value_serde=serdes.STR))
    return app


def timer_entries(d: TopologyTestDriver) -> list[bytes]:
    return sorted(d.key_value_store("reminders-timers"))


def run_one_failing_timer(d: TopologyTestDriver) -> tuple[list[str], list]:
    inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
    out = d.output_topic("out", value_serde=serdes.STR)
    inp.pipe_input("100", key="bad", timestamp=10)
    inp.pipe_input("100", key="good", timestamp=11)
    inp.pipe_input("get", key="other", timestamp=200)  # watermark 199: both timers are due
    return out.read_values_to_list(), d.dlq_topic().read_records_to_list()


def test_dlq_a_failing_on_timer_leaves_no_output_or_state_and_describes_the_timer():
    app = reminders_app("dlq", failing={"bad"})
    with TopologyTestDriver(app, wall_clock_ms=5_000) as d:
        outputs, dlq = run_one_failing_timer(d)
        assert outputs == ["other:fired=0", "good:partial@100", "good:done@100"], (
            "nothing of the failing call may be visible")
        assert len(dlq) == 1, dlq
        rec = dlq[0]
        h = dict(rec.headers)
        assert rec.key == b"bad" and rec.value is None and rec.timestamp == 5_000
        assert h["kstreamlet.error.stage"] == b"timer"
        assert h["kstreamlet.timer.operator"] == b"reminders"
        assert h["kstreamlet.timer.key"] == b"bad"
        assert h["kstreamlet.timer.domain"] == b"event"
        assert h["kstreamlet.timer.timestamp"] == b"100"
        assert h["kstreamlet.error.type"] == b"RuntimeError"
        assert h["kstreamlet.error.message"] == b"cannot remind bad"
        assert h["kstreamlet.application.id"] == b"rem"
        # The timer counts as fired; the follow-up timer and counter update of the failed call are
        # rolled back, the successful call's stay.
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        out = d.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input("get", key="bad", timestamp=300)
        inp.pipe_input("get", key="good", timestamp=301)
        assert out.read_values_to_list() == ["bad:fired=0", "good:fired=1"]
        assert len(timer_entries(d)) == 1, "only good's follow-up timer (1000100) is left"
        inp.pipe_input("get", key="other", timestamp=2_000_000)  # passes every timer, incl. the follow-up
        assert out.read_values_to_list() == ["other:fired=0", "good:partial@1000100", "good:done@1000100"]
        assert d.dlq_topic().is_empty(), "the failed timer fired again"


def test_dlq_processing_time_timer_is_described_as_processing():
    app = reminders_app("dlq", failing={"bad"})
    with TopologyTestDriver(app, wall_clock_ms=1_000) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        out = d.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input("p500", key="bad", timestamp=1)
        d.advance_wall_clock_time(500)
        assert out.is_empty()
        (rec,) = d.dlq_topic().read_records_to_list()
        h = dict(rec.headers)
        assert h["kstreamlet.timer.domain"] == b"processing" and h["kstreamlet.timer.timestamp"] == b"1500"
        d.advance_wall_clock_time(10_000)
        assert d.dlq_topic().is_empty() and out.is_empty()


def test_skip_drops_the_failing_call_without_a_dlq_record():
    app = reminders_app("skip", failing={"bad"})
    with TopologyTestDriver(app, wall_clock_ms=5_000) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        out = d.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input("100", key="bad", timestamp=10)
        inp.pipe_input("100", key="good", timestamp=11)
        inp.pipe_input("get", key="bad", timestamp=200)
        assert out.read_values_to_list() == ["bad:fired=0", "good:partial@100", "good:done@100"]
        assert d.dlq_topic().is_empty()
        inp.pipe_input("get", key="bad", timestamp=300)
        assert out.read_values_to_list() == ["bad:fired=0"], "the skipped timer must not fire again"
        assert len(timer_entries(d)) == 1  # good's follow-up only


def test_fail_raises_and_commits_nothing_so_the_timer_fires_again():
    app = reminders_app("fail", failing={"bad"})
    fn_failing = next(n.fn for st in app.topology().subtopologies for n in st.nodes if n.name == "reminders").failing
    with TopologyTestDriver(app, wall_clock_ms=5_000) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        out = d.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input("100", key="bad", timestamp=10)
        committed_timers = timer_entries(d)
        assert len(committed_timers) == 1
        with pytest.raises(ProcessingError, match=r"on_timer failed: RuntimeError: cannot remind bad.*timer event@100"):
            inp.pipe_input("get", key="good", timestamp=200)
        assert out.is_empty(), "the aborted checkpoint's outputs (also the record's own) are not visible"
        assert d.dlq_topic().is_empty()
        assert timer_entries(d) == committed_timers, "the timer's deletion was not committed"
        assert d.watermark("in") < 100, "stream time rolls back with the checkpoint"
        # The bug fixed (as after a restart with a fix): the same timer fires, once.
        fn_failing.clear()
        inp.pipe_input("get", key="good", timestamp=200)
        assert out.read_values_to_list() == ["good:fired=0", "bad:partial@100", "bad:done@100"]
        inp.pipe_input("get", key="bad", timestamp=300)
        assert out.read_values_to_list() == ["bad:fired=1"]


def windowed_app(policy: str) -> App:
    app = App(application_id="winerr", bootstrap_servers="127.0.0.1:1", error_policy=policy)

    def per_window(key, w, total, out):
        out(f"{key}|{w.end}|{total}")
        if key == "bad":
            raise ValueError("bad window")
        out(f"{key}|{w.end}|ok")

    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.INT64,
                watermarks=WatermarkStrategy.for_monotonous_timestamps())
        .keyed()
        .window(TumblingEventTimeWindows.of(100))
        .reduce(lambda a, b: a + b, serde=serdes.INT64, name="sums", window_fn=per_window)
        .to("out", value_serde=serdes.STR))
    return app


@pytest.mark.parametrize("policy", ["dlq", "skip"])
def test_window_function_errors_follow_the_policy(policy):
    with TopologyTestDriver(windowed_app(policy), wall_clock_ms=0) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.INT64)
        out = d.output_topic("out", value_serde=serdes.STR)
        for key, v, ts in [("bad", 1, 10), ("good", 2, 20), ("bad", 3, 30), ("x", 0, 150)]:
            inp.pipe_input(v, key=key, timestamp=ts)
        assert out.read_values_to_list() == ["good|100|2", "good|100|ok"]
        dlq = d.dlq_topic().read_records_to_list()
        if policy == "dlq":
            assert len(dlq) == 1 and dlq[0].key == b"bad"
            h = dict(dlq[0].headers)
            assert h["kstreamlet.timer.operator"] == b"sums" and h["kstreamlet.timer.timestamp"] == b"99"
            assert h["kstreamlet.error.message"] == b"bad window"
        else:
            assert dlq == []
        inp.pipe_input(0, key="x", timestamp=1_000)
        assert out.read_values_to_list() == ["x|200|0", "x|200|ok"], "the failed window does not fire again"


def test_window_function_error_under_fail_keeps_the_window():
    with TopologyTestDriver(windowed_app("fail"), wall_clock_ms=0) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.INT64)
        out = d.output_topic("out", value_serde=serdes.STR)
        inp.pipe_input(1, key="bad", timestamp=10)
        windows = d.key_value_store("sums-windows")
        with pytest.raises(ProcessingError, match="bad window"):
            inp.pipe_input(0, key="x", timestamp=150)
        assert out.is_empty() and d.key_value_store("sums-windows") == windows


def test_window_join_function_error_goes_to_the_dlq_with_nothing_emitted():
    app = App(application_id="joinerr", bootstrap_servers="127.0.0.1:1", error_policy="dlq")
    wm = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda v: v["ts"])
    left = app.stream("left", value_serde=serdes.JSON, watermarks=wm)
    right = app.stream("right", value_serde=serdes.JSON, watermarks=wm)

    def pair(lv, rv):
        if lv["v"] == "boom":
            raise KeyError("no pair")
        return f"{lv['v']}+{rv['v']}"

    (left.join(right).where(lambda v: v["k"], key_serde=serdes.STR).equal_to(lambda v: v["k"])
        .window(TumblingEventTimeWindows.of(100)).apply(pair, output_serde=serdes.STR, name="j")
        .to("out", value_serde=serdes.STR))
    with TopologyTestDriver(app, wall_clock_ms=0) as d:
        li = d.input_topic("left", value_serde=serdes.JSON)
        ri = d.input_topic("right", value_serde=serdes.JSON)
        li.pipe_input({"k": "a", "v": "ok", "ts": 10})
        li.pipe_input({"k": "b", "v": "x", "ts": 11})
        li.pipe_input({"k": "b", "v": "boom", "ts": 12})
        ri.pipe_input({"k": "a", "v": "r", "ts": 20})
        ri.pipe_input({"k": "b", "v": "r", "ts": 21})
        li.pipe_input({"k": "z", "v": "-", "ts": 500})
        ri.pipe_input({"k": "z", "v": "-", "ts": 500})
        assert d.output_topic("out", value_serde=serdes.STR).read_values_to_list() == ["ok+r"], (
            "key b's window emitted x+r before boom: nothing of it may be visible")
        (rec,) = d.dlq_topic().read_records_to_list()
        h = dict(rec.headers)
        assert h["kstreamlet.timer.operator"] == b"j" and h["kstreamlet.error.type"] == b"KeyError"
        assert rec.key == b"b"

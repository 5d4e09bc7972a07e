"""User-defined window triggers (Flink's ``Trigger``, ``TriggerResult``, ``TriggerContext``), per-window
timers, partitioned trigger state, global windows (issue 14). Scenarios after Flink's
WindowOperatorTest / trigger tests, through the TopologyTestDriver."""

from __future__ import annotations

import operator

import pytest

from kstreamlet import ReducingStateDescriptor, ValueStateDescriptor, serdes
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import (
    ContinuousEventTimeTrigger,
    ContinuousProcessingTimeTrigger,
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindows,
    NeverTrigger,
    ProcessingTimeSessionWindows,
    PurgingTrigger,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    Trigger,
    TriggerResult,
)
from tests.unit.window_helpers import keyed_app, pipe, records

COUNT = ReducingStateDescriptor("n", reduce_fn=operator.add, serde=serdes.INT64)


class EveryNth(Trigger):
    """Fires (and purges) on every ``n``-th element of a window; counts in partitioned state."""

    def __init__(self, n: int, purge: bool = True) -> None:
        self.n, self.purge = n, purge
        self.cleared: list[tuple[int, int]] = []

    def on_element(self, element, timestamp, window, ctx):
        count = ctx.get_partitioned_state(COUNT)
        count.add(1)
        if count.get() >= self.n:
            count.clear()
            return TriggerResult.FIRE_AND_PURGE if self.purge else TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def can_merge(self):
        return True

    def on_merge(self, window, ctx):
        ctx.merge_partitioned_state(COUNT)

    def clear(self, window, ctx):
        self.cleared.append((window.start, window.end))
        ctx.get_partitioned_state(COUNT).clear()


def window_entries(d, name="w-windows"):
    return d.key_value_store(name)


def test_custom_trigger_fires_on_every_third_element_then_purges():
    app, keyed = keyed_app(bound_ms=10_000)  # nothing is late, nothing fires on time
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(EveryNth(3)).apply(
        lambda key, w, items: [key, w.start, items], name="w").to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [("a", 1, 1), ("d", 1, 2), ("a", 2, 3), ("a", 3, 150), ("a", 4, 4), ("d", 2, 5), ("d", 3, 6),
                 ("a", 5, 7), ("a", 6, 8), ("a", 7, 9)])
        got = records(d, "out")
        # per key and window: a's [0,100) fires at its 3rd and 6th element, each time with only the
        # elements since the purge; a's [100,200) has fewer than 3. "d" is in the other partition.
        assert sorted((k, v[1], v[2]) for k, ts, v in got) == [
            ("a", 0, [1, 2, 4]), ("a", 0, [5, 6, 7]), ("d", 0, [1, 2, 3])]
        assert all(ts == 99 for _, ts, _ in got), "results carry the window's max timestamp"


def test_custom_trigger_without_purge_keeps_contents():
    app, keyed = keyed_app(bound_ms=10_000)
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(EveryNth(2, purge=False)).sum().to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("a", 1, 1), ("a", 2, 2), ("a", 3, 3), ("a", 4, 4)])
        assert [v for _, _, v in records(d, "out")] == [3, 10]


def test_purging_trigger_of_a_custom_trigger_purges_its_firings():
    app, keyed = keyed_app(bound_ms=10_000)
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(PurgingTrigger.of(EveryNth(2, purge=False))).sum().to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("a", 1, 1), ("a", 2, 2), ("a", 3, 3), ("a", 4, 4)])
        assert [v for _, _, v in records(d, "out")] == [3, 7]


class FireAtOffset(Trigger):
    """Registers an event-time timer at ``window.start + offset`` on each element; FIRE on it."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.calls: list[tuple[int, int]] = []

    def on_element(self, element, timestamp, window, ctx):
        if window.start + self.offset > ctx.current_watermark:  # else it would fire at once
            ctx.register_event_time_timer(window.start + self.offset)
        return TriggerResult.CONTINUE

    def on_event_time(self, time, window, ctx):
        self.calls.append((time, window.start))
        return TriggerResult.FIRE if time == window.start + self.offset else TriggerResult.CONTINUE


def test_trigger_timers_fire_only_for_the_window_that_registered_them():
    trig = FireAtOffset(15)
    app, keyed = keyed_app()
    keyed.window(SlidingEventTimeWindows.of(20, 10)).trigger(trig).apply(
        lambda key, w, items: [w.start, items]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        # 12 is in [0,20) (timer at 15) and [10,30) (timer at 25): the key's timer at 15 is only
        # [0,20)'s, so [10,30)'s trigger is not called at 15.
        pipe(d, [("k", 1, 12), ("k", 2, 16)])  # 16 is in both windows too; then wm 15
        assert [v for _, _, v in records(d, "out")] == [[0, [1, 2]]]
        assert trig.calls == [(15, 0)]
        pipe(d, [("k", 3, 26)])  # wm 25: [10,30) fires on its own timer; [20,40)'s timer is at 35
        assert [v for _, _, v in records(d, "out")] == [[10, [1, 2, 3]]]
        assert (25, 10) in trig.calls and (25, 20) not in trig.calls
        # The cleanup timers (lateness 0: at the window end) call the trigger too, as Flink's.
        assert (19, 0) in trig.calls


def test_timer_shared_by_two_windows_calls_each_trigger_once():
    class AtTime(Trigger):
        def on_element(self, element, timestamp, window, ctx):
            if ctx.current_watermark < 50:
                ctx.register_event_time_timer(50)
                ctx.register_event_time_timer(50)  # once per window, as Flink's timer set
            return TriggerResult.CONTINUE

        def on_event_time(self, time, window, ctx):
            return TriggerResult.FIRE if time == 50 else TriggerResult.CONTINUE

    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(100)).allowed_lateness(1000).trigger(AtTime()).apply(
        lambda key, w, items: [key, w.start, items]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        # a's two windows [0,100) and [-100,0) both register 50; b's window does too.
        pipe(d, [("a", 1, 10), ("a", 2, -5), ("b", 3, 20), ("a", 4, 51)])
        assert sorted(v for _, _, v in records(d, "out")) == [["a", -100, [2]], ["a", 0, [1, 4]], ["b", 0, [3]]]
        pipe(d, [("a", 5, 90)])
        assert records(d, "out") == [], "each window's timer fired once"


class DeletesItsTimer(Trigger):
    def on_element(self, element, timestamp, window, ctx):
        if element == "cancel":
            ctx.delete_event_time_timer(50)
        else:
            ctx.register_event_time_timer(50)
        return TriggerResult.CONTINUE

    def on_event_time(self, time, window, ctx):
        return TriggerResult.FIRE if time == 50 else TriggerResult.CONTINUE


def test_deleting_a_trigger_timer_keeps_other_windows_timer_at_that_time():
    app, keyed = keyed_app(bound_ms=100)
    keyed.window(TumblingEventTimeWindows.of(10)).allowed_lateness(1000).trigger(DeletesItsTimer()).apply(
        lambda key, w, items: [w.start, items]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        # [0,10) and [10,20) of one key both register 50; "cancel" deletes only [0,10)'s.
        pipe(d, [("k", "x", 2), ("k", "w", 12), ("k", "cancel", 3)])
        pipe(d, [("k", "cancel", 151)])  # wm 50
        assert [v for _, _, v in records(d, "out")] == [[10, ["w"]]]


def test_cleanup_calls_trigger_clear_and_drops_all_window_state():
    trig = EveryNth(10)
    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(100)).allowed_lateness(50).trigger(trig).count(name="w").to(
        "out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 10), ("k", 1, 20)])
        assert window_entries(d), "contents, trigger state and timers are in the operator's store"
        pipe(d, [("k", 1, 148)])  # wm 147: [0,100) is kept until 99 + 50
        assert (0, 100) not in trig.cleared
        pipe(d, [("k", 1, 150)])  # wm 149 = cleanup time of [0,100)
        assert trig.cleared == [(0, 100)]
        # Only [100,200)'s entries are left (its contents, count state and cleanup timer); keys are
        # key_prefix("k") (5 bytes) | tag | window (start, end) or, for timers, | domain | time | window.
        left = window_entries(d)
        starts = {int.from_bytes(k[6:14], "big") - 2**63 for k in left if k[5:6] in (b"c", b"g")}
        starts |= {int.from_bytes(k[15:23], "big") - 2**63 for k in left if k[5:6] == b"t"}
        assert starts == {100}
        assert records(d, "out") == [], "the trigger never fired, as Flink's: no firing at cleanup"


def test_trigger_state_is_per_key_and_window():
    seen = []

    class Remember(Trigger):
        FIRST = ValueStateDescriptor("first", serdes.JSON)

        def on_element(self, element, timestamp, window, ctx):
            st = ctx.get_partitioned_state(self.FIRST)
            if st.value() is None:
                st.update(element)
            seen.append((element, st.value()))
            return TriggerResult.CONTINUE

    app, keyed = keyed_app(bound_ms=10_000)
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(Remember()).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [("a", "a0", 1), ("b", "b0", 2), ("a", "a1", 3), ("a", "a100", 101), ("b", "b1", 4), ("a", "a2", 5),
                 ("d", "d0", 6), ("d", "d1", 7)])
    assert seen == [("a0", "a0"), ("b0", "b0"), ("a1", "a0"), ("a100", "a100"), ("b1", "b0"), ("a2", "a0"),
                    ("d0", "d0"), ("d1", "d0")]


def test_trigger_sees_watermark_and_processing_time():
    seen = []

    class Look(Trigger):
        def on_element(self, element, timestamp, window, ctx):
            seen.append((timestamp, ctx.current_watermark, ctx.current_processing_time))
            return TriggerResult.CONTINUE

    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(Look()).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app, wall_clock_ms=7_000) as d:
        pipe(d, [("a", 1, 10), ("a", 1, 20)])
    assert seen[1] == (20, 9, 7_000)


def test_processing_time_trigger_timers_fire_on_wall_clock():
    class EveryTenSeconds(Trigger):
        def on_element(self, element, timestamp, window, ctx):
            now = ctx.current_processing_time
            ctx.register_processing_time_timer(now - now % 10_000 + 10_000)
            return TriggerResult.CONTINUE

        def on_processing_time(self, time, window, ctx):
            return TriggerResult.FIRE_AND_PURGE

    app, keyed = keyed_app(bound_ms=10**9)
    keyed.window(TumblingEventTimeWindows.of(10**9)).trigger(EveryTenSeconds()).sum().to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, wall_clock_ms=1_000, partitions={"in": 2}) as d:
        pipe(d, [("a", 1, 5), ("d", 10, 6), ("a", 2, 7)])
        d.advance_wall_clock_time(8_999)
        assert records(d, "out") == []
        d.advance_wall_clock_time(1)
        assert sorted(v for _, _, v in records(d, "out")) == [3, 10]
        pipe(d, [("a", 5, 8)])
        d.advance_wall_clock_time(10_000)
        assert [v for _, _, v in records(d, "out")] == [5]


def test_trigger_timers_survive_restart():
    class AtWallClock(Trigger):
        def on_element(self, element, timestamp, window, ctx):
            ctx.register_processing_time_timer(5_000)
            return TriggerResult.CONTINUE

        def on_processing_time(self, time, window, ctx):
            return TriggerResult.FIRE

    app, keyed = keyed_app(bound_ms=10**9)
    keyed.window(TumblingEventTimeWindows.of(1000)).trigger(AtWallClock()).apply(
        lambda key, w, items: [key, w.start, items]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, wall_clock_ms=1_000, partitions={"in": 2}) as d:
        pipe(d, [("a", 1, 10), ("d", 2, 20), ("a", 3, 1500)])
        d.restart()  # new tasks on the restored stores: windows, per-window timers, trigger state
        pipe(d, [("d", 4, 30)])
        d.advance_wall_clock_time(4_000)
        assert sorted(v for _, _, v in records(d, "out")) == [["a", 0, [1]], ["a", 1000, [3]], ["d", 0, [2, 4]]]
        d.restart()
        d.advance_wall_clock_time(10_000)
        assert records(d, "out") == [], "each timer fired once, also across restarts"


def test_event_time_trigger_timer_survives_restart_and_fires_once():
    trig = FireAtOffset(50)
    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(100)).allowed_lateness(1000).trigger(trig).sum().to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 10), ("k", 2, 20)])
        d.restart()
        pipe(d, [("k", 4, 40)])
        assert records(d, "out") == []
        pipe(d, [("k", 8, 60)])  # wm 59: the timer at 50, registered before the restart
        assert [v for _, _, v in records(d, "out")] == [15]
        d.restart()
        pipe(d, [("k", 16, 99)])
        assert records(d, "out") == []


def strict_app():
    from kstreamlet import App
    from kstreamlet.eventtime import WatermarkStrategy

    app = App(application_id="win", bootstrap_servers="127.0.0.1:1", error_policy="fail")
    s = app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON,
                   watermarks=WatermarkStrategy.for_bounded_out_of_orderness(0))
    return app, s.keyed()


def test_trigger_must_return_a_trigger_result():
    class Forgetful(Trigger):
        def on_element(self, element, timestamp, window, ctx):
            ctx.register_event_time_timer(window.max_timestamp)

    app, keyed = strict_app()
    keyed.window(TumblingEventTimeWindows.of(100)).trigger(Forgetful()).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d, pytest.raises(Exception, match="Forgetful.on_element must return a "
                                                                       "TriggerResult, got None"):
        pipe(d, [("k", 1, 1)])


def test_non_trigger_and_non_merging_trigger_are_rejected():
    app, keyed = keyed_app()
    with pytest.raises(TypeError, match="must be a kstreamlet.windowing Trigger"):
        keyed.window(TumblingEventTimeWindows.of(10)).trigger(lambda *a: None)

    class NoMerge(Trigger):
        pass

    with pytest.raises(ValueError, match="merging window assigner .* NoMerge.can_merge\\(\\) is False"):
        keyed.window(EventTimeSessionWindows.with_gap(10)).trigger(NoMerge())
    with pytest.raises(ValueError, match="emit_updates"):
        keyed.window(TumblingEventTimeWindows.of(10)).trigger(NoMerge()).emit_updates().count()


def test_merge_partitioned_state_outside_on_merge_and_of_value_state_fails():
    class Bad(Trigger):
        def on_element(self, element, timestamp, window, ctx):
            ctx.merge_partitioned_state(COUNT)
            return TriggerResult.CONTINUE

    app, keyed = strict_app()
    keyed.window(TumblingEventTimeWindows.of(10)).trigger(Bad()).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d, pytest.raises(Exception, match="only available in Trigger.on_merge"):
        pipe(d, [("k", 1, 1)])


# --- session windows with a custom trigger: on_merge, state merged, merged-away windows cleared -----------------

def test_session_merge_calls_on_merge_merges_state_and_clears_merged_windows():
    trig = EveryNth(3)
    app, keyed = keyed_app(bound_ms=10_000)
    keyed.window(EventTimeSessionWindows.with_gap(10)).trigger(trig).apply(
        lambda key, w, items: [w.start, w.end, items], name="w").to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 0), ("k", 2, 20)])  # sessions [0,10) and [20,30), one element each
        assert records(d, "out") == []
        # [10,20) touches both: one session [0,30); counts 1 + 1 merged, then its own: 3 -> FIRE_AND_PURGE.
        pipe(d, [("k", 3, 10)])
        assert [v for _, _, v in records(d, "out")] == [[0, 30, [1, 2, 3]]]
        assert sorted(trig.cleared) == [(0, 10), (20, 30)], "clear() on each merged-away window"
        pipe(d, [("k", 4, 5), ("k", 5, 6)])  # inside [0,30): no merge; count 2
        pipe(d, [("k", 6, 30)])  # extends [0,30) to [0,40): a merge of one window, count 2 + 1
        assert [v for _, _, v in records(d, "out")] == [[0, 40, [4, 5, 6]]]
        assert (0, 30) in trig.cleared
        # Nothing is left of the merged-away windows: only [0,40)'s state remains.
        ends = {int.from_bytes(k[14:22], "big") - 2**63 for k in window_entries(d) if k[5:6] in (b"c", b"g", b"s")}
        ends |= {int.from_bytes(k[23:31], "big") - 2**63 for k in window_entries(d) if k[5:6] == b"t"}
        assert ends == {40}


def test_session_merge_keeps_the_earliest_timer_of_a_merging_trigger():
    class FireAtFirstPlusFive(Trigger):
        AT = ReducingStateDescriptor("at", reduce_fn=min, serde=serdes.INT64)

        def on_element(self, element, timestamp, window, ctx):
            st = ctx.get_partitioned_state(self.AT)
            if st.get() is None:
                st.add(timestamp + 5)
                ctx.register_event_time_timer(timestamp + 5)
            return TriggerResult.CONTINUE

        def on_event_time(self, time, window, ctx):
            return TriggerResult.FIRE if ctx.get_partitioned_state(self.AT).get() == time else TriggerResult.CONTINUE

        def can_merge(self):
            return True

        def on_merge(self, window, ctx):
            ctx.merge_partitioned_state(self.AT)
            ctx.register_event_time_timer(ctx.get_partitioned_state(self.AT).get())

        def clear(self, window, ctx):
            st = ctx.get_partitioned_state(self.AT)
            if st.get() is not None:
                ctx.delete_event_time_timer(st.get())
            st.clear()

    app, keyed = keyed_app(bound_ms=1000)
    keyed.window(EventTimeSessionWindows.with_gap(100)).trigger(FireAtFirstPlusFive()).apply(
        lambda key, w, items: [w.start, w.end, items], name="w").to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        # [1,101) (timer 6) and [150,250) (timer 155) are bridged by [100,200): the merged [1,250)
        # takes the earliest (state merged with min), the merged-away windows' timers are cleared.
        pipe(d, [("k", "a", 1), ("k", "b", 150), ("k", "c", 100)])
        timers = {int.from_bytes(k[7:15], "big") - 2**63 for k in window_entries(d) if k[5:6] == b"t"}
        assert timers == {6, 249}  # and the merged window's cleanup timer
        pipe(d, [("k", "d", 1007)])  # wm 6
        assert [v for _, _, v in records(d, "out")] == [[1, 250, ["a", "b", "c"]]]
        pipe(d, [("k", "e", 1200)])  # wm 199: nothing at 155 any more
        assert records(d, "out") == []


def test_processing_time_sessions_with_count_trigger_in_general_operator():
    app, keyed = keyed_app()
    keyed.window(ProcessingTimeSessionWindows.with_gap(1000)).trigger(EveryNth(2)).sum().to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, wall_clock_ms=0) as d:
        pipe(d, [("k", 1, 0)])
        d.advance_wall_clock_time(500)
        pipe(d, [("k", 2, 0)])
        assert [v for _, _, v in records(d, "out")] == [3]
        d.advance_wall_clock_time(5000)  # the session [500,1500) is cleaned up at 1499
        pipe(d, [("k", 4, 0)])
        assert records(d, "out") == []


# --- global windows ----------------------------------------------------------------------------------------

def test_global_window_with_count_trigger_fires_per_n_elements_per_key():
    app, keyed = keyed_app()
    keyed.window(GlobalWindows.create()).trigger(PurgingTrigger.of(CountTrigger.of(3))).apply(
        lambda key, w, items: [key, items]).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [("a", i, 1000 + i) for i in range(7)] + [("d", i, 5) for i in range(10, 13)] + [("c", 0, 0)])
        got = records(d, "out")
        assert sorted(v for _, _, v in got) == [["a", [0, 1, 2]], ["a", [3, 4, 5]], ["d", [10, 11, 12]]]
        # A global window's results carry the firing element's timestamp (not Long.MAX_VALUE).
        assert sorted(ts for _, ts, _ in got) == [5, 1002, 1005]


def test_global_window_count_trigger_without_purge_accumulates():
    # Flink's countWindow(n) without purging: every n-th element fires over all elements so far.
    app, keyed = keyed_app()
    keyed.window(GlobalWindows.create()).trigger(CountTrigger.of(2)).count().to("out", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        pipe(d, [("a", 0, i) for i in range(5)])
        out = d.output_topic("out", value_serde=serdes.INT64)
        assert out.read_values_to_list() == [2, 4]


def test_global_windows_default_trigger_never_fires_and_nothing_is_late():
    app, keyed = keyed_app()
    result = keyed.window(GlobalWindows.create()).side_output_late_data("late").count()
    result.to("out", value_serde=serdes.INT64)
    result.side_output("late").to("late", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("a", 0, 1000), ("a", 0, 1), ("a", 0, 10**12)])
        d.advance_wall_clock_time(10**9)
        assert records(d, "out") == []
        assert d.output_topic("late", value_serde=serdes.JSON).is_empty()
    assert NeverTrigger.create() == NeverTrigger()


def test_global_windows_with_continuous_event_time_trigger_fire_every_interval():
    # Flink's WindowOperatorTest.testContinuousWatermarkTrigger: GlobalWindows +
    # ContinuousEventTimeTrigger(interval) fire at every interval the watermark passes.
    app, keyed = keyed_app()
    keyed.window(GlobalWindows.create()).trigger(ContinuousEventTimeTrigger.of(1000)).sum().to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        # "a" and "d" are in different partitions (murmur2), each with its own watermark.
        pipe(d, [("a", 1, 100), ("a", 2, 500), ("d", 3, 600)])
        pipe(d, [("a", 4, 1001), ("d", 5, 1001)])  # wm 1000: first firing of each key
        assert sorted((k, ts, v) for k, ts, v in records(d, "out")) == [("a", 1000, 7), ("d", 1000, 8)]
        pipe(d, [("a", 8, 3500)])  # a's wm 3499: firings at 2000 and 3000, d's partition unaffected
        assert [(k, ts, v) for k, ts, v in records(d, "out")] == [("a", 2000, 15), ("a", 3000, 15)]


def test_global_windows_with_continuous_processing_time_trigger():
    app, keyed = keyed_app()
    keyed.window(GlobalWindows.create()).trigger(PurgingTrigger.of(ContinuousProcessingTimeTrigger.of(1000))).sum(
    ).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, wall_clock_ms=10_250) as d:
        pipe(d, [("a", 1, 0), ("a", 2, 0)])
        d.advance_wall_clock_time(749)
        assert records(d, "out") == []
        d.advance_wall_clock_time(1)  # 11_000: the first firing, anchored on the first element
        assert records(d, "out") == [("a", 11_000, 3)]
        pipe(d, [("a", 4, 0)])
        d.advance_wall_clock_time(1000)
        d.advance_wall_clock_time(1000)  # a firing on purged (empty) contents emits nothing
        assert records(d, "out") == [("a", 12_000, 4)]


def test_continuous_processing_time_trigger_needs_processing_time_windows():
    app, keyed = keyed_app()
    with pytest.raises(ValueError, match="processing-time trigger cannot fire event-time windows"):
        keyed.window(TumblingEventTimeWindows.of(10)).trigger(ContinuousProcessingTimeTrigger.of(5))
    keyed.window(TumblingProcessingTimeWindows.of(10)).trigger(ContinuousProcessingTimeTrigger.of(5))
    keyed.window(GlobalWindows.create()).trigger(EventTimeTrigger.create())


# --- built-in triggers through the general operator (via a delegating user trigger) ---------------------------

class Delegate(Trigger):
    """A user trigger doing exactly what a built-in one does: forces the general operator."""

    def __init__(self, inner: Trigger) -> None:
        self.inner = inner

    def on_element(self, element, timestamp, window, ctx):
        return self.inner.on_element(element, timestamp, window, ctx)

    def on_event_time(self, time, window, ctx):
        return self.inner.on_event_time(time, window, ctx)

    def on_processing_time(self, time, window, ctx):
        return self.inner.on_processing_time(time, window, ctx)

    def can_merge(self):
        return self.inner.can_merge()

    def on_merge(self, window, ctx):
        self.inner.on_merge(window, ctx)

    def clear(self, window, ctx):
        self.inner.clear(window, ctx)


@pytest.mark.parametrize("make", [lambda: EventTimeTrigger.create(), lambda: CountTrigger.of(2),
                                  lambda: ContinuousEventTimeTrigger.of(7), lambda: PurgingTrigger.of(CountTrigger.of(2))])
@pytest.mark.parametrize("assigner", [TumblingEventTimeWindows.of(20), SlidingEventTimeWindows.of(20, 10),
                                      EventTimeSessionWindows.with_gap(8)])
def test_builtin_trigger_in_general_operator_matches_fast_path(make, assigner):
    events = [("a", 1, 3), ("b", 2, 5), ("a", 3, 14), ("a", 4, 9), ("a", 5, 30), ("b", 6, 24), ("a", 7, 21),
              ("a", 8, 60), ("b", 9, 41), ("a", 10, 33), ("a", 11, 90)]

    def run(trigger):
        app, keyed = keyed_app(bound_ms=4)
        r = keyed.window(assigner).allowed_lateness(10).side_output_late_data("late").trigger(trigger).sum()
        r.to("out", value_serde=serdes.JSON)
        r.side_output("late").to("late", value_serde=serdes.JSON)
        with TopologyTestDriver(app) as d:
            pipe(d, events)
            return sorted(records(d, "out")), d.output_topic("late", value_serde=serdes.JSON).read_values_to_list()

    fast, general = run(make()), run(Delegate(make()))
    assert general == fast


def test_builtin_triggers_keep_the_fast_path_and_others_run_the_general_operator():
    from kstreamlet.operators.window import WindowOperator
    from kstreamlet.operators.window_general import GeneralWindowOperator
    from kstreamlet.windowing import CountEvictor

    def operator_of(configure):
        app, keyed = keyed_app()
        configure(keyed).count(name="w").to("out", value_serde=serdes.INT64)
        return type(next(n.fn for st in app.topology().subtopologies for n in st.nodes if n.name == "w"))

    tumbling = TumblingEventTimeWindows.of(10)
    assert operator_of(lambda k: k.window(tumbling)) is WindowOperator
    for t in (CountTrigger.of(2), PurgingTrigger.of(ContinuousEventTimeTrigger.of(5)), EventTimeTrigger.create()):
        assert operator_of(lambda k: k.window(tumbling).trigger(t)) is WindowOperator
    assert operator_of(lambda k: k.window(tumbling).trigger(EveryNth(2))) is GeneralWindowOperator
    assert operator_of(lambda k: k.window(tumbling).trigger(PurgingTrigger.of(EveryNth(2)))) is GeneralWindowOperator
    assert operator_of(lambda k: k.window(tumbling).evictor(CountEvictor.of(2))) is GeneralWindowOperator
    assert operator_of(lambda k: k.window(GlobalWindows.create()).trigger(CountTrigger.of(2))) is GeneralWindowOperator
    assert isinstance(CountTrigger.of(2), Trigger) and isinstance(PurgingTrigger.of(EveryNth(2)), Trigger)


def test_driver_restart_keeps_committed_state_and_stream_time():
    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(100)).sum().to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, partitions={"in": 2}) as d:
        pipe(d, [("a", 1, 10), ("d", 2, 50), ("a", 4, 60)])
        wms = (d.watermark("in", 0), d.watermark("in", 1))
        d.restart()
        assert (d.watermark("in", 0), d.watermark("in", 1)) == wms == (59, 49)
        pipe(d, [("a", 8, 30), ("a", 16, 100), ("d", 32, 100)])  # 30 is late for nothing (wm 59)
        assert sorted(records(d, "out")) == [("a", 99, 13), ("d", 99, 2)]


def test_cogroup_with_a_user_defined_trigger_runs_the_general_operator():
    from kstreamlet import App
    from kstreamlet.dsl.joins import CoGroupBuilder
    from kstreamlet.eventtime import WatermarkStrategy

    app = App(application_id="cg", bootstrap_servers="127.0.0.1:1")
    wm = WatermarkStrategy.for_bounded_out_of_orderness(10_000)
    a = app.stream("a", value_serde=serdes.JSON, watermarks=wm)
    b = app.stream("b", value_serde=serdes.JSON, watermarks=wm)
    (CoGroupBuilder(a, b).where(lambda v: v["k"], key_serde=serdes.STR).equal_to(lambda v: v["k"])
        .window(TumblingEventTimeWindows.of(1000)).trigger(EveryNth(3))
        .apply(lambda ls, rs: [[[x["i"] for x in ls], [x["i"] for x in rs]]]).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        ai, bi = d.input_topic("a", value_serde=serdes.JSON), d.input_topic("b", value_serde=serdes.JSON)
        ai.pipe_input({"k": "x", "i": 1}, timestamp=1)
        bi.pipe_input({"k": "x", "i": 2}, timestamp=2)
        ai.pipe_input({"k": "x", "i": 3}, timestamp=3)
        assert d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() == [[[1, 3], [2]]]


def test_timer_registered_in_the_past_fires_at_once_within_the_round_or_at_the_next_advance():
    calls = []

    class Chain(Trigger):
        def on_element(self, element, timestamp, window, ctx):
            ctx.register_event_time_timer(10)
            return TriggerResult.CONTINUE

        def on_event_time(self, time, window, ctx):
            calls.append((time, ctx.current_watermark))
            if time == 10:
                ctx.register_event_time_timer(5)  # in the past: fires in this same round
            return TriggerResult.FIRE if time == 5 else TriggerResult.CONTINUE

    app, keyed = keyed_app()
    keyed.window(TumblingEventTimeWindows.of(1000)).trigger(Chain()).sum().to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        pipe(d, [("k", 1, 1), ("k", 2, 20)])  # wm 19
        assert calls == [(10, 19), (5, 19)]
        assert [v for _, _, v in records(d, "out")] == [3]
        pipe(d, [("k", 4, 15)])  # registers 10 again, behind the watermark: fires at its next advance
        assert calls[2:] == []
        pipe(d, [("k", 8, 21)])
        assert calls[2:] == [(10, 20), (5, 20)]
        assert [v for _, _, v in records(d, "out")] == [15]

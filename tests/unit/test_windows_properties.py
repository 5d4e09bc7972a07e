"""Property-based: windowed aggregates and joins against brute-force references over random,
out-of-order inputs with late data (hypothesis)."""

from __future__ import annotations

import collections
import itertools

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import (
    ContinuousEventTimeTrigger,
    CountEvictor,
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    TimeEvictor,
    Trigger,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)

events_st = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 200), st.integers(1, 9)),
                     min_size=1, max_size=60)
SETTINGS = settings(max_examples=int(__import__("os").environ.get("KSTREAMLET_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def windows_of(ts, size, slide):
    start = ts - ts % slide
    out = []
    while start > ts - size:
        out.append((start, start + size))
        start -= slide
    return out


def reference_windows(events, size, slide, bound, lateness):
    """Flink semantics: each element processed before the watermark it causes; a window fires when
    the watermark reaches its max timestamp, again for each late element within the lateness; an
    element is dropped for a window whose max timestamp + lateness <= current watermark."""
    wm = -(2**63)
    max_ts = -(2**63)
    contents = collections.defaultdict(list)  # (key, win) -> values
    fired = set()
    emitted = []
    for key, ts, v in events:
        for w in windows_of(ts, size, slide):
            if w[1] - 1 + lateness <= wm:
                continue
            contents[(key, w)].append(v)
            if (key, w) in fired:
                emitted.append((key, w[1] - 1, sum(contents[(key, w)])))
        max_ts = max(max_ts, ts)
        new_wm = max(wm, max_ts - bound - 1)
        for (k, w), vals in sorted(contents.items(), key=lambda e: (e[0][1][1], e[0][0])):
            if (k, w) not in fired and w[1] - 1 <= new_wm:
                fired.add((k, w))
                emitted.append((k, w[1] - 1, sum(vals)))
        wm = new_wm
        for kw in [kw for kw in contents if kw[1][1] - 1 + lateness <= wm]:
            del contents[kw]  # cleanup: later elements for it are dropped
    return emitted


def run_windowed(events, assigner, bound, lateness):
    app = App(application_id="prop", bootstrap_servers="127.0.0.1:1")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON,
                watermarks=WatermarkStrategy.for_bounded_out_of_orderness(bound))
        .keyed().window(assigner).allowed_lateness(lateness).sum().to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        for key, ts, v in events:
            inp.pipe_input(v, key=key, timestamp=ts)
        return [(r.key, r.timestamp, r.value) for r in
                d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()]


@SETTINGS
@given(events=events_st, size=st.integers(1, 40), bound=st.integers(0, 30), lateness=st.integers(0, 30))
def test_tumbling_sum_matches_reference(events, size, bound, lateness):
    got = run_windowed(events, TumblingEventTimeWindows.of(size), bound, lateness)
    want = reference_windows(events, size, size, bound, lateness)
    assert collections.Counter(got) == collections.Counter(want)


@SETTINGS
@given(events=events_st, size=st.integers(2, 40), slide_div=st.integers(1, 4), bound=st.integers(0, 30),
       lateness=st.integers(0, 30))
def test_sliding_sum_matches_reference(events, size, slide_div, bound, lateness):
    slide = max(1, size // slide_div)
    got = run_windowed(events, SlidingEventTimeWindows.of(size, slide), bound, lateness)
    want = reference_windows(events, size, slide, bound, lateness)
    assert collections.Counter(got) == collections.Counter(want)


def reference_sessions(events, gap):
    by_key = collections.defaultdict(list)
    for key, ts, v in events:
        by_key[key].append((ts, v))
    out = []
    for key, items in by_key.items():
        items.sort()
        start, end, total = None, None, 0
        for ts, v in items:
            if start is not None and ts <= end:  # touching windows merge, as in Flink
                end = max(end, ts + gap)
                total += v
            else:
                if start is not None:
                    out.append((key, end - 1, total))
                start, end, total = ts, ts + gap, v
        out.append((key, end - 1, total))
    return out


@SETTINGS
@given(events=events_st, gap=st.integers(1, 20))
def test_session_sum_matches_reference_when_nothing_is_late(events, gap):
    # The bound covers all disorder (max ts 200), so every element is on time and sessions are exact.
    got = run_windowed(events + [("zz-flush", 10_000, 0)], EventTimeSessionWindows.with_gap(gap), 250, 0)
    got = [g for g in got if g[0] != "zz-flush"]
    assert collections.Counter(got) == collections.Counter(reference_sessions(events, gap))


@SETTINGS
@given(left=st.lists(st.tuples(st.sampled_from("xy"), st.integers(0, 100)), max_size=25),
       right=st.lists(st.tuples(st.sampled_from("xy"), st.integers(0, 100)), max_size=25),
       lower=st.integers(-20, 5), width=st.integers(0, 20), bound=st.integers(0, 120),
       order=st.randoms(use_true_random=False))
def test_interval_join_matches_reference(left, right, lower, width, bound, order):
    upper = lower + width
    events = [("L", k, t, i) for i, (k, t) in enumerate(left)] + [("R", k, t, i) for i, (k, t) in enumerate(right)]
    order.shuffle(events)
    app = App(application_id="ij", bootstrap_servers="127.0.0.1:1")
    wm = WatermarkStrategy.for_bounded_out_of_orderness(bound).with_timestamp_assigner(lambda v: v["ts"])
    lft = app.stream("l", value_serde=serdes.JSON, watermarks=wm).key_by(lambda v: v["k"], key_serde=serdes.STR)
    rgt = app.stream("r", value_serde=serdes.JSON, watermarks=wm).key_by(lambda v: v["k"], key_serde=serdes.STR)
    lft.interval_join(rgt).between(lower, upper).apply(lambda a, b: [a["i"], b["i"]]).to("out")
    with TopologyTestDriver(app) as d:
        li, ri = d.input_topic("l", value_serde=serdes.JSON), d.input_topic("r", value_serde=serdes.JSON)
        accepted = {"L": [], "R": []}
        low = -(2**63)
        side_max = {"L": low, "R": low}
        wmark = low
        for side, k, t, i in events:
            (li if side == "L" else ri).pipe_input({"k": k, "ts": t, "i": i})
            if t >= wmark:  # reference: late elements (ts < watermark) are dropped
                accepted[side].append((k, t, i))
            # The join task's watermark is the minimum over its two inputs (a silent input holds it).
            side_max[side] = max(side_max[side], t)
            wmark = max(wmark, min(m - bound - 1 if m != low else low for m in side_max.values()))
        got = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
    want = [[li_, ri_] for (lk, lt, li_), (rk, rt, ri_) in itertools.product(accepted["L"], accepted["R"])
            if lk == rk and lt + lower <= rt <= lt + upper]
    assert sorted(got) == sorted(want)


# --- A Flink WindowOperator model: per-window timers and trigger state, merging, lateness ---------------------

class FlinkWindowModel:
    """A brute-force model of Flink's WindowOperator (per-window timers, as Flink's namespaces), with
    EventTimeTrigger (``time``), CountTrigger (``count``, n) or ContinuousEventTimeTrigger
    (``continuous``, interval); sessions merge as Flink's MergingWindowSet does (sort, merge runs of
    intersecting windows), lateness judged on the merged window. Emits ``(key, max_ts, sum)``.

    ``evictor``: None, or ``(kind, n, after)`` with kind ``count`` (keep the last ``n``) or ``time``
    (drop timestamps ``<= max - n``), applied before (``after`` False) or after the sum, the rest
    kept in the window (Flink's EvictingWindowOperator); a firing over no elements emits nothing."""

    def __init__(self, assign, merging, trigger, param, lateness, evictor=None):
        self.assign, self.merging, self.trigger, self.param, self.lateness = assign, merging, trigger, param, lateness
        self.evictor = evictor
        self.wm = -(2**63)
        self.windows = collections.defaultdict(dict)  # key -> {(start, end): [values, trigger state]}
        self.timers = set()  # (ts, key, window)
        self.emitted, self.late = [], []

    def evict(self, items):
        kind, n, _ = self.evictor
        if kind == "count":
            return items[-n:] if len(items) > n else items
        cutoff = max(t for t, _ in items) - n if items else 0
        return [(t, v) for t, v in items if t > cutoff]

    def fire(self, key, w):
        entry = self.windows[key][w]
        items = entry[0]
        if self.evictor is not None and not self.evictor[2]:
            items = self.evict(items)
        if items:
            self.emitted.append((key, w[1] - 1, sum(v for _, v in items)))
        if self.evictor is not None and self.evictor[2]:
            items = self.evict(items)
        entry[0] = items

    def on_element(self, key, w, ts):
        mt, entry = w[1] - 1, self.windows[key][w]
        if self.trigger == "time":
            if mt <= self.wm:
                self.fire(key, w)
            else:
                self.timers.add((mt, key, w))
        elif self.trigger == "count":
            entry[1] = (entry[1] or 0) + 1
            if entry[1] >= self.param:
                entry[1] = 0
                self.fire(key, w)
        else:
            if mt <= self.wm:
                self.fire(key, w)
                return
            self.timers.add((mt, key, w))
            if entry[1] is None:
                entry[1] = min(ts - ts % self.param + self.param, mt)
                self.timers.add((entry[1], key, w))

    def element(self, key, ts, v):
        accepted = False
        for w in self.assign(ts):
            wins = self.windows[key]
            if self.merging:
                merged, absorbed = w, []
                for other in sorted(wins):  # existing sessions never intersect each other
                    if other[0] <= merged[1] and merged[0] <= other[1]:
                        absorbed.append(other)
                        merged = (min(merged[0], other[0]), max(merged[1], other[1]))
                if merged[1] - 1 + self.lateness <= self.wm:
                    continue
                if absorbed and absorbed != [merged]:
                    vals, states = [], []
                    for other in absorbed:
                        vals += wins[other][0]
                        states.append(wins.pop(other)[1])
                        self.timers = {t for t in self.timers if t[1:] != (key, other)}
                    present = [s for s in states if s is not None]
                    st = (sum(present) if self.trigger == "count" else min(present)) if present else None
                    wins[merged] = [vals, st]
                    if self.trigger == "time" and merged[1] - 1 > self.wm:
                        self.timers.add((merged[1] - 1, key, merged))
                    if self.trigger == "continuous" and st is not None:
                        self.timers.add((st, key, merged))
                w = merged
            elif w[1] - 1 + self.lateness <= self.wm:
                continue
            accepted = True
            wins.setdefault(w, [[], None])[0].append((ts, v))
            self.on_element(key, w, ts)
            self.timers.add((w[1] - 1 + self.lateness, key, w))  # the cleanup timer
        if not accepted:
            self.late.append(v)

    def advance(self, wm):
        if wm <= self.wm:
            return
        self.wm = wm
        while True:
            due = [t for t in self.timers if t[0] <= wm]
            if not due:
                return
            t = min(due)
            self.timers.discard(t)
            ts, key, w = t
            entry = self.windows[key].get(w)
            if entry is None:
                continue
            mt = w[1] - 1
            if self.trigger == "time" and ts == mt:
                self.fire(key, w)
            elif self.trigger == "continuous":
                if ts == mt:
                    self.fire(key, w)
                elif entry[1] == ts:
                    entry[1] = min(ts + self.param, mt)
                    self.timers.add((entry[1], key, w))
                    self.fire(key, w)
            if ts == mt + self.lateness:
                del self.windows[key][w]  # clearAllState
                self.timers = {x for x in self.timers if x[1:] != (key, w)}


def run_model(events, assign, merging, trigger, param, bound, lateness, evictor=None):
    m = FlinkWindowModel(assign, merging, trigger, param, lateness, evictor)
    max_ts = -(2**63)
    for key, ts, v in events:
        m.element(key, ts, v)  # each element is processed before the watermark it causes
        max_ts = max(max_ts, ts)
        m.advance(max_ts - bound - 1)
    return m.emitted, m.late


class Delegate(Trigger):
    """A user-defined trigger doing what a built-in one does: runs the general window operator."""

    def __init__(self, inner):
        self.inner = inner

    def on_element(self, element, timestamp, window, ctx):
        return self.inner.on_element(element, timestamp, window, ctx)

    def on_event_time(self, time, window, ctx):
        return self.inner.on_event_time(time, window, ctx)

    def on_processing_time(self, time, window, ctx):
        return self.inner.on_processing_time(time, window, ctx)

    def can_merge(self):
        return True

    def on_merge(self, window, ctx):
        self.inner.on_merge(window, ctx)

    def clear(self, window, ctx):
        self.inner.clear(window, ctx)


def run_kstreamlet(events, assigner, trigger, bound, lateness, evictor=None, general=False):
    app = App(application_id="prop", bootstrap_servers="127.0.0.1:1")
    w = (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON,
                    watermarks=WatermarkStrategy.for_bounded_out_of_orderness(bound))
         .keyed().window(assigner).allowed_lateness(lateness).side_output_late_data("late"))
    if general:
        trigger = Delegate(trigger or EventTimeTrigger.create())
    if trigger is not None:
        w = w.trigger(trigger)
    if evictor is not None:
        kind, n, after = evictor
        w = w.evictor((CountEvictor if kind == "count" else TimeEvictor).of(n, do_evict_after=after))
    result = w.sum()
    result.to("out", value_serde=serdes.JSON)
    result.side_output("late").to("late", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        for key, ts, v in events:
            inp.pipe_input(v, key=key, timestamp=ts)
        got = [(r.key, r.timestamp, r.value) for r in
               d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()]
        return got, d.output_topic("late", value_serde=serdes.JSON).read_values_to_list()


def session_assign(gap):
    return lambda ts: [(ts, ts + gap)]


def sliding_assign(size, slide):
    return lambda ts: windows_of(ts, size, slide)


def check_against_model(events, assigner, model_assign, merging, trigger_kind, param, bound, lateness,
                        evictor=None, general=False):
    trigger = {"time": None, "count": CountTrigger.of, "continuous": ContinuousEventTimeTrigger.of}[trigger_kind]
    got, got_late = run_kstreamlet(events, assigner, trigger and trigger(param), bound, lateness, evictor, general)
    want, want_late = run_model(events, model_assign, merging, trigger_kind, param, bound, lateness, evictor)
    assert collections.Counter(got) == collections.Counter(want)
    assert collections.Counter(got_late) == collections.Counter(want_late)


triggers_st = st.sampled_from(["time", "count", "continuous"])


@SETTINGS
@given(events=events_st, gap=st.integers(1, 20), bound=st.integers(0, 30), lateness=st.integers(0, 30),
       trigger=triggers_st, param=st.integers(1, 12))
# issue 14: a late element merging into a kept session; counts summed on a merge; early firings on sessions
@example(events=[("a", 100, 1), ("a", 125, 2), ("a", 95, 4)], gap=10, bound=0, lateness=20, trigger="time", param=1)
@example(events=[("a", 0, 1), ("a", 20, 1), ("a", 1, 1), ("a", 21, 1), ("a", 10, 1)], gap=10, bound=30,
         lateness=0, trigger="count", param=3)
@example(events=[("a", 1, 1), ("a", 5, 1), ("a", 12, 1), ("a", 25, 1)], gap=20, bound=0, lateness=0,
         trigger="continuous", param=10)
def test_session_windows_with_lateness_and_triggers_match_flink_model(events, gap, bound, lateness, trigger, param):
    check_against_model(events, EventTimeSessionWindows.with_gap(gap), session_assign(gap), True,
                        trigger, param, bound, lateness)


@SETTINGS
@given(events=events_st, size=st.integers(2, 40), slide_div=st.integers(1, 4), bound=st.integers(0, 30),
       lateness=st.integers(0, 30), trigger=triggers_st, param=st.integers(1, 12))
# issue 14: the first early firing is anchored on the first element, its timer at the interval
@example(events=[("a", 25, 1), ("a", 39, 1), ("a", 40, 1), ("a", 41, 1)], size=100, slide_div=1, bound=0,
         lateness=0, trigger="continuous", param=20)
def test_sliding_and_tumbling_triggers_match_flink_model(events, size, slide_div, bound, lateness, trigger, param):
    slide = max(1, size // slide_div)
    check_against_model(events, SlidingEventTimeWindows.of(size, slide), sliding_assign(size, slide), False,
                        trigger, param, bound, lateness)


# --- the general window operator (user-defined triggers, evictors) against the same model (issue 14) --------------

evictors_st = st.one_of(st.none(), st.tuples(st.sampled_from(["count", "time"]), st.integers(0, 12), st.booleans())
                        .map(lambda e: (e[0], max(1, e[1]) if e[0] == "count" else e[1], e[2])))


@SETTINGS
@given(events=events_st, gap=st.integers(1, 20), bound=st.integers(0, 30), lateness=st.integers(0, 30),
       trigger=triggers_st, param=st.integers(1, 12), evictor=evictors_st)
def test_sessions_in_general_operator_match_flink_model(events, gap, bound, lateness, trigger, param, evictor):
    # Built-in triggers wrapped in a user-defined trigger: per-window timers, partitioned state, on_merge.
    check_against_model(events, EventTimeSessionWindows.with_gap(gap), session_assign(gap), True,
                        trigger, param, bound, lateness, evictor, general=True)


@SETTINGS
@given(events=events_st, size=st.integers(2, 40), slide_div=st.integers(1, 4), bound=st.integers(0, 30),
       lateness=st.integers(0, 30), trigger=triggers_st, param=st.integers(1, 12), evictor=evictors_st,
       general=st.booleans())
# a count evictor before a count trigger's sum on sliding windows; a time evictor after it
@example(events=[("a", 1, 1), ("a", 2, 2), ("a", 3, 3), ("a", 4, 4)], size=20, slide_div=2, bound=0, lateness=0,
         trigger="count", param=2, evictor=("count", 1, False), general=False)
@example(events=[("a", 1, 1), ("a", 5, 2), ("a", 9, 3), ("a", 30, 4)], size=10, slide_div=1, bound=0, lateness=5,
         trigger="time", param=1, evictor=("time", 3, True), general=False)
def test_evictors_and_general_operator_match_flink_model(events, size, slide_div, bound, lateness, trigger, param,
                                                         evictor, general):
    slide = max(1, size // slide_div)
    check_against_model(events, SlidingEventTimeWindows.of(size, slide), sliding_assign(size, slide), False,
                        trigger, param, bound, lateness, evictor, general)


@SETTINGS
@given(events=events_st, bound=st.integers(0, 30), trigger=triggers_st, param=st.integers(1, 12),
       evictor=evictors_st)
def test_global_windows_match_flink_model(events, bound, trigger, param, evictor):
    # GlobalWindows: one window per key, never late, no cleanup; the default trigger never fires.
    # kstreamlet stamps a global window's results with the firing's time (Flink: Long.MAX_VALUE), so
    # only keys and values are compared.
    from kstreamlet.windowing import GlobalWindows

    make = {"time": None, "count": CountTrigger.of, "continuous": ContinuousEventTimeTrigger.of}[trigger]
    got, got_late = run_kstreamlet(events, GlobalWindows.create(), make and make(param), bound, 0, evictor)
    want, want_late = run_model(events, lambda ts: [(-(2**63), 2**63 - 1)], False, trigger, param, bound, 0, evictor)
    assert collections.Counter((k, v) for k, _, v in got) == collections.Counter((k, v) for k, _, v in want)
    assert got_late == want_late == []

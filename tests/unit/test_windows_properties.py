"""Property-based: windowed aggregates and joins against brute-force references over random,
out-of-order inputs with late data (hypothesis)."""

from __future__ import annotations

import collections
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing import EventTimeSessionWindows, SlidingEventTimeWindows, TumblingEventTimeWindows

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
            if t > wmark:  # reference: late elements (ts <= watermark) are dropped
                accepted[side].append((k, t, i))
            # The join task's watermark is the minimum over its two inputs (a silent input holds it).
            side_max[side] = max(side_max[side], t)
            wmark = max(wmark, min(m - bound - 1 if m != low else low for m in side_max.values()))
        got = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
    want = [[li_, ri_] for (lk, lt, li_), (rk, rt, ri_) in itertools.product(accepted["L"], accepted["R"])
            if lk == rk and lt + lower <= rt <= lt + upper]
    assert sorted(got) == sorted(want)

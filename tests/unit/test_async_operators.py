"""Async operators on the TopologyTestDriver: order modes, capacity, timeouts, retries, the error
policy, async keyed process (state per key), checkpoint drain bound; one test against a real local
HTTP server (tests/apps/http_service.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from kstreamlet import App, KeyedProcessFunction, ValueStateDescriptor, serdes
from kstreamlet.errors import ProcessingError, TopologyError
from kstreamlet.runtime.checkpoint import AbortCheckpoint
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing.assigners import TumblingEventTimeWindows


class Probe:
    """An async service stand-in: sleeps ``value['ms']`` ms; counts calls in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls: dict[str, int] = {}

    async def __call__(self, v: dict) -> dict:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.calls[v["id"]] = self.calls.get(v["id"], 0) + 1
        try:
            await asyncio.sleep(v["ms"] / 1000)
            if v.get("fail_times", 0) >= self.calls[v["id"]]:
                raise ConnectionError(f"injected failure {self.calls[v['id']]} of {v['id']}")
            return {**v, "done": True}
        finally:
            self.in_flight -= 1


def _app(probe: Probe, **kw) -> App:
    app = App(application_id="async", error_policy=kw.pop("error_policy", "dlq"), **kw.pop("settings", {}))
    app.stream("in", value_serde=serdes.JSON).map_async(probe, **kw).to("out", value_serde=serdes.JSON)
    return app


def _pipe(driver: TopologyTestDriver, records: list[tuple[str, str, int]], partitions: int = 1) -> None:
    inp = driver.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON, partitions=partitions)
    with driver.one_checkpoint():
        for key, ident, ms in records:
            inp.pipe_input({"id": ident, "ms": ms}, key=key)


# Latencies chosen so that completion order differs from input order.
RECORDS = [("a", "a1", 80), ("b", "b1", 10), ("a", "a2", 40), ("b", "b2", 60), ("c", "c1", 1)]


def _out(driver: TopologyTestDriver) -> list[str]:
    return [v["id"] for v in driver.output_topic("out", value_serde=serdes.JSON).read_values_to_list()]


def test_ordered_keeps_input_order_per_partition() -> None:
    with TopologyTestDriver(_app(Probe(), concurrency=8)) as d:
        _pipe(d, RECORDS)
        assert _out(d) == ["a1", "b1", "a2", "b2", "c1"]


def test_unordered_releases_in_completion_order() -> None:
    with TopologyTestDriver(_app(Probe(), concurrency=8, ordered=False)) as d:
        _pipe(d, RECORDS)
        assert _out(d) == ["c1", "b1", "a2", "b2", "a1"]


def test_unordered_key_ordered_keeps_each_keys_order() -> None:
    with TopologyTestDriver(_app(Probe(), concurrency=8, ordered=False, key_ordered=True)) as d:
        _pipe(d, RECORDS)
        out = _out(d)
    # a2 completes before a1 but waits for it; b and c go as they complete.
    assert out == ["c1", "b1", "b2", "a1", "a2"]


def test_ordered_is_per_partition_across_partitions() -> None:
    recs = [(f"k{i}", f"r{i}", (i * 37) % 25) for i in range(40)]
    with TopologyTestDriver(_app(Probe(), concurrency=8)) as d:
        _pipe(d, recs, partitions=3)
        got = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()
    assert sorted(r.value["id"] for r in got) == sorted(r[1] for r in recs)
    from kstreamlet.testing.driver import murmur2_partition

    for p in range(3):
        expect = [ident for key, ident, _ in recs if murmur2_partition(key.encode(), 3) == p]
        seen = [r.value["id"] for r in got if murmur2_partition(r.key.encode(), 3) == p]
        assert seen == expect


def test_in_flight_never_exceeds_capacity_and_full_task_pauses_its_partition() -> None:
    probe = Probe()
    with TopologyTestDriver(_app(probe, concurrency=3)) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON, partitions=2)
        aio = None
        paused: list[list] = []
        resumed: list[list] = []
        with d.one_checkpoint():
            for i in range(3):
                inp.pipe_input({"id": f"x{i}", "ms": 40}, key="x", partition=0)
            aio = d.async_runtime()
            assert aio is not None
            aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))
            assert paused == [], "full, but no record waits for it: nothing to hold back yet"
            inp.pipe_input({"id": "x3", "ms": 2}, key="x", partition=0)  # waits for a slot
            aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))
            assert paused == [[("in", 0)]], "a task whose input waited for a slot must be paused"
            for i in range(4, 20):  # waits for room: never a fourth call in flight
                inp.pipe_input({"id": f"x{i}", "ms": 2}, key="x", partition=0)
        aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))
        assert resumed == [], "records waited for a slot since the last look: the input stays paused"
        aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))
        assert resumed == [[("in", 0)]], "a partition it paused is resumed once there is room"
        assert len(_out(d)) == 20
    assert probe.max_in_flight == 3


def test_a_task_that_waited_for_a_slot_is_paused_and_resumed_at_half_capacity() -> None:
    """A batch bigger than the free slots waits for room record by record; by the time the loop
    looks, the last calls may have completed (not full). The task still outpaced its calls: its
    input is paused, and resumed only once its operator holds at most half its capacity."""
    probe = Probe()
    with TopologyTestDriver(_app(probe, concurrency=4)) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON, partitions=2)
        paused: list[list] = []
        resumed: list[list] = []
        with d.one_checkpoint():
            for i in range(12):  # 8 of them wait for a slot
                inp.pipe_input({"id": f"y{i}", "ms": 1}, key="y", partition=1)
            aio = d.async_runtime()
            assert aio is not None
            aio.run(0.5, 4)
            aio.emit_ready()
            ops = [op for op in aio.operators if op.inputs == [("in", 1)]]
            assert ops and not ops[0].full()
            aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))
            assert paused == [[("in", 1)]], "a task whose records waited for a slot must be paused"
            inp.pipe_input({"id": "slow-a", "ms": 300}, key="y", partition=1)
            inp.pipe_input({"id": "slow-b", "ms": 300}, key="y", partition=1)
            inp.pipe_input({"id": "slow-c", "ms": 300}, key="y", partition=1)
            aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))
            assert ops[0].in_flight() == 3 and resumed == [], "above half its capacity: stays paused"
        aio.backpressure(paused.append, resumed.append, lambda t, p: (t, p))
        assert resumed == [[("in", 1)]]
        assert sorted(_out(d)) == sorted([f"y{i}" for i in range(12)] + ["slow-a", "slow-b", "slow-c"])


def test_timeout_then_retries_then_dead_letter_with_the_error() -> None:
    probe = Probe()
    app = _app(probe, concurrency=4, timeout=0.05, retries=2, retry_backoff=0.001)
    with TopologyTestDriver(app) as d:
        _pipe(d, [("k", "slow", 500), ("k", "ok", 1)])
        assert _out(d) == ["ok"]
        dlq = d.dlq_topic().read_records_to_list()
    assert probe.calls["slow"] == 3  # first attempt + 2 retries
    assert len(dlq) == 1
    h = dict(dlq[0].headers)
    assert h["kstreamlet.error.type"] == b"TimeoutError"
    assert h["kstreamlet.error.stage"] == b"process"
    assert json.loads(dlq[0].value)["id"] == "slow"


def test_retry_with_backoff_recovers_from_transient_failures() -> None:
    probe = Probe()
    with TopologyTestDriver(_app(probe, retries=3, retry_backoff=0.001)) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        inp.pipe_input({"id": "flaky", "ms": 1, "fail_times": 2}, key="k")
        assert _out(d) == ["flaky"]
        assert d.dlq_topic().is_empty()
    assert probe.calls["flaky"] == 3


def test_exhausted_retries_follow_error_policy_fail() -> None:
    probe = Probe()
    with TopologyTestDriver(_app(probe, retries=1, retry_backoff=0.001, error_policy="fail")) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        with pytest.raises(ProcessingError, match="injected failure"):
            inp.pipe_input({"id": "bad", "ms": 1, "fail_times": 5}, key="k")
        assert _out(d) == []


def test_checkpoint_past_the_drain_bound_aborts_and_abandons_the_calls() -> None:
    probe = Probe()
    app = _app(probe, settings={"async_checkpoint_timeout": 0.1})
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        with pytest.raises(AbortCheckpoint, match="async_checkpoint_timeout"):
            inp.pipe_input({"id": "hang", "ms": 5000}, key="k")
        aio = d.async_runtime()
        assert aio is not None and not aio.pending()
        inp.pipe_input({"id": "next", "ms": 1}, key="k")
        assert _out(d) == ["next"]  # nothing of the aborted checkpoint is released later


def test_event_time_right_after_an_async_operator_is_refused() -> None:
    app = App(application_id="async-wm")
    (app.stream("in", value_serde=serdes.JSON).map_async(Probe()).keyed()
        .window(TumblingEventTimeWindows.of(1000)).count().to("out"))
    with pytest.raises(TopologyError, match="Repartition between"):
        TopologyTestDriver(app)


def test_bad_arguments_fail_fast() -> None:
    app = App(application_id="async-args")
    s = app.stream("in")
    for kw, field in (({"concurrency": 0}, "concurrency"), ({"timeout": 0}, "timeout"), ({"retries": -1}, "retries")):
        with pytest.raises(ValueError, match=field):
            s.map_async(Probe(), **kw)


class CountingEnricher(KeyedProcessFunction):
    """Async process: reads the key's count, awaits a lookup, writes count + 1 and emits it."""

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", serdes.INT64))

    async def process_element(self, value, ctx):
        n = self.count.value() or 0
        await asyncio.sleep(value["ms"] / 1000)
        if value.get("fail"):
            self.count.update(-100)  # written by the failing attempt: must be undone
            raise RuntimeError("lookup failed")
        self.count.update(n + 1)
        ctx.emit({"id": value["id"], "n": n + 1})


def _process_app(**kw) -> App:
    app = App(application_id="async-proc")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON).keyed()
        .process(CountingEnricher(), name="enrich", **kw).to("out", value_serde=serdes.JSON))
    return app


def test_async_process_keeps_state_consistent_per_key_and_runs_keys_concurrently() -> None:
    recs = [("a", "a1", 30), ("b", "b1", 30), ("a", "a2", 1), ("a", "a3", 1), ("b", "b2", 1)]
    with TopologyTestDriver(_process_app(concurrency=8, ordered=False)) as d:
        _pipe(d, recs)
        got = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
        # Per key one call at a time: each sees the previous count (no lost update).
        assert [v["n"] for v in got if v["id"].startswith("a")] == [1, 2, 3]
        assert [v["n"] for v in got if v["id"].startswith("b")] == [1, 2]
        d.restart()  # the counts were committed with the checkpoint
        d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON).pipe_input({"id": "a4", "ms": 1}, key="a")
        assert d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() == [{"id": "a4", "n": 4}]


def test_async_process_failed_attempt_leaves_no_state_or_output() -> None:
    with TopologyTestDriver(_process_app(retries=1, retry_backoff=0.001)) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        inp.pipe_input({"id": "a1", "ms": 1}, key="a")
        inp.pipe_input({"id": "bad", "ms": 1, "fail": True}, key="a")
        inp.pipe_input({"id": "a2", "ms": 1}, key="a")
        got = d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()
        assert got == [{"id": "a1", "n": 1}, {"id": "a2", "n": 2}]
        assert len(d.dlq_topic().read_records_to_list()) == 1


def test_async_process_with_timers_is_refused() -> None:
    class WithTimer(CountingEnricher):
        def on_timer(self, ts, ctx):
            pass

    app = App(application_id="async-timer")
    with pytest.raises(TypeError, match="on_timer"):
        app.stream("in").keyed().process(WithTimer())


def test_against_a_real_http_server_with_latency_and_failures() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from tests.apps.http_service import HttpService

    with HttpService(latency_min=0.001, latency_max=0.02, fail_rate=0.2, seed=7) as svc:
        sessions: dict[int, object] = {}

        async def enrich(v: str) -> str:
            loop = id(asyncio.get_running_loop())
            s = sessions.get(loop)
            if s is None:
                s = sessions[loop] = aiohttp.ClientSession()
            async with s.get(svc.url, params={"v": v}) as resp:  # type: ignore[attr-defined]
                resp.raise_for_status()
                return await resp.text()

        app = App(application_id="async-http")
        (app.stream("in", value_serde=serdes.STR).map_async(enrich, concurrency=8, retries=10, retry_backoff=0.001)
            .to("out", value_serde=serdes.STR))
        with TopologyTestDriver(app) as d:
            inp = d.input_topic("in", value_serde=serdes.STR, partitions=2)
            with d.one_checkpoint():
                for i in range(100):
                    inp.pipe_input(str(i), partition=i % 2)
            out = d.output_topic("out", value_serde=serdes.STR).read_values_to_list()
            for s in sessions.values():
                d.async_runtime().loop.run_until_complete(s.close())  # type: ignore[union-attr, attr-defined]
        assert svc.failures > 0, "the service injected no failure: the retries were not exercised"
        assert svc.max_in_flight <= 8 * 2
    for p in range(2):
        assert [v for v in out if int(v.split(":")[0]) % 2 == p] == [f"{i}:ok" for i in range(p, 100, 2)]
    assert len(out) == 100


def test_async_settings_fail_fast_naming_field_and_env_var() -> None:
    import importlib.util

    from kstreamlet.config import load_settings
    from kstreamlet.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_settings(application_id="a", transaction_timeout=4, async_checkpoint_timeout=4)
    assert "async_checkpoint_timeout" in str(e.value) and "KSTREAMLET_ASYNC_CHECKPOINT_TIMEOUT" in str(e.value)
    assert load_settings(application_id="a", transaction_timeout=4).effective_async_checkpoint_timeout == 2
    if importlib.util.find_spec("uvloop") is None:
        with pytest.raises(ConfigError) as e:
            load_settings(application_id="a", async_event_loop="uvloop")
        assert "KSTREAMLET_ASYNC_EVENT_LOOP" in str(e.value) and "kstreamlet[async]" in str(e.value)


def test_a_full_operator_waits_at_most_the_bound_then_aborts() -> None:
    probe = Probe()
    app = _app(probe, concurrency=1, settings={"async_checkpoint_timeout": 0.1})
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        with pytest.raises(AbortCheckpoint, match="stayed full"):
            with d.one_checkpoint():
                inp.pipe_input({"id": "hang", "ms": 5000}, key="k")
                inp.pipe_input({"id": "second", "ms": 1}, key="k")
        assert not d.async_runtime().pending()  # type: ignore[union-attr]
        assert _out(d) == []


class Ticker(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.timers.register_processing_time(ctx.timers.current_processing_time() + 10)

    def on_timer(self, ts, ctx):
        ctx.emit({"id": "from-timer", "ms": 1, "fail_times": 9})


def test_a_failing_call_pushed_by_a_timer_goes_to_the_dlq_as_the_timers_failure() -> None:
    app = App(application_id="async-timer-dlq")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON).keyed().process(Ticker(), name="tick")
        .map_async(Probe(), retries=0).to("out", value_serde=serdes.JSON))
    with TopologyTestDriver(app, wall_clock_ms=1000) as d:
        d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON).pipe_input({"id": "x", "ms": 1}, key="k")
        d.advance_wall_clock_time(20)
        dlq = d.dlq_topic().read_records_to_list()
        assert _out(d) == []
    assert len(dlq) == 1
    h = dict(dlq[0].headers)
    assert h["kstreamlet.error.stage"] == b"timer" and h["kstreamlet.timer.domain"] == b"async"
    assert h["kstreamlet.error.type"] == b"ConnectionError"


def test_watermark_forwarded_after_the_async_results_so_downstream_windows_miss_nothing() -> None:
    from kstreamlet import WatermarkStrategy

    app = App(application_id="async-wm-ok")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON,
                watermarks=WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v["ts"]))
        .map_async(Probe(), concurrency=8, ordered=False)
        .key_by(lambda v: v["id"][0], key_serde=serdes.STR)
        .window(TumblingEventTimeWindows.of(1000)).count()
        .to("out", value_serde=serdes.INT64))
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        with d.one_checkpoint():  # slow calls first: their results are released last, after the watermark passed 1000
            for i, ms in enumerate([40, 30, 20, 1, 1]):
                inp.pipe_input({"id": f"a{i}", "ms": ms, "ts": 100 + i}, key="k")
            inp.pipe_input({"id": "a9", "ms": 1, "ts": 5000}, key="k")
        inp.pipe_input({"id": "b0", "ms": 1, "ts": 9000}, key="k")
        counts = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.INT64).read_values_to_list()
    assert counts[0] == 5, f"the first window must count all five records (none late): {counts}"

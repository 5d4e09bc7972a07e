"""Checkpoints that do not wait for async calls (operators/async_ops.py, runtime/async_io.py): the
records a ``map_async`` holds are written to its store with the offsets that pass them, and issued
again after a crash or an abort — every output exactly once; a task forwards no watermark past a
held record; what cannot be encoded is drained instead."""

from __future__ import annotations

import asyncio

import pytest

from kstreamlet import App, WatermarkStrategy, serdes
from kstreamlet.operators.async_ops import decode_held, encode_held
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.windowing.assigners import TumblingEventTimeWindows


class Gate:
    """An async service stand-in whose calls wait until the test opens the gate (or fail when told)."""

    def __init__(self) -> None:
        self.open = False
        self.calls: list[str] = []
        self.fail: set[str] = set()

    async def __call__(self, v: dict) -> dict:
        self.calls.append(v["id"])
        while not self.open and not v.get("fast"):
            await asyncio.sleep(0.001)
        if v["id"] in self.fail:
            raise ConnectionError(f"injected failure of {v['id']}")
        return {**v, "done": True}


def _app(gate: Gate, **kw) -> App:
    app = App(application_id="async-ckpt", error_policy="dlq")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        .map_async(gate, name="enrich", **kw)
        .to("out", key_serde=serdes.STR, value_serde=serdes.JSON))
    return app


def _out(d: TopologyTestDriver) -> list[str]:
    return [v["id"] for v in d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()]


def test_a_checkpoint_commits_with_calls_in_flight_and_a_restart_issues_them_again() -> None:
    gate = Gate()
    with TopologyTestDriver(_app(gate, concurrency=8), wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON, partitions=2)
        for i in range(6):
            inp.pipe_input({"id": f"r{i}"}, key=f"k{i}", headers=[("trace", f"t{i}".encode())])
        assert _out(d) == [], "nothing completed yet"
        held = [d.key_value_store("enrich-async", partition=p) for p in (0, 1)]
        assert sum(map(len, held)) == 6, "every record in flight is in the committed state (per task)"
        d.restart()  # a crash: the calls in flight are lost, the committed state has their records
        gate.open = True
        d.settle_async()
        got = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()
        assert sorted(r.value["id"] for r in got) == [f"r{i}" for i in range(6)], "each output exactly once"
        assert all(r.headers == [("trace", f"t{r.value['id'][1:]}".encode())] for r in got), "record context kept"
        assert [d.key_value_store("enrich-async", partition=p) for p in (0, 1)] == [{}, {}], \
            "released records are deleted at the next checkpoint"
    assert sorted(gate.calls) == sorted([f"r{i}" for i in range(6)] * 2), "each call issued again once"


def test_released_results_commit_and_only_the_held_ones_are_issued_again_in_order() -> None:
    gate = Gate()
    with TopologyTestDriver(_app(gate, concurrency=8), wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        inp.pipe_input({"id": "a", "fast": True}, key="k")
        inp.pipe_input({"id": "b"}, key="k")
        inp.pipe_input({"id": "c", "fast": True}, key="k")  # done, but ordered: waits behind b
        inp.pipe_input({"id": "d", "fast": True}, key="k")
        assert _out(d) == ["a"]
        d.restart()
        gate.open = True
        d.settle_async()
        assert _out(d) == ["b", "c", "d"], "held records come back in their order, none twice"


def test_an_abort_issues_the_committed_held_records_again() -> None:
    gate = Gate()
    with TopologyTestDriver(_app(gate, concurrency=8), wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        inp.pipe_input({"id": "x"}, key="k")  # committed while in flight
        with pytest.raises(RuntimeError):
            with d.one_checkpoint():
                inp.pipe_input({"id": "y"}, key="k")
                raise RuntimeError("the checkpoint fails")  # aborted: its input would be replayed
        gate.open = True
        d.settle_async()
        assert _out(d) == ["x"], "the record held by the last commit is issued again; the aborted one is not"
    assert gate.calls.count("x") == 2


def test_a_held_record_that_fails_after_the_restart_goes_to_the_dlq_with_its_input_record() -> None:
    gate = Gate()
    with TopologyTestDriver(_app(gate, concurrency=4), wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        inp.pipe_input({"id": "bad"}, key="kb")
        d.restart()
        gate.fail.add("bad")
        gate.open = True
        d.settle_async()
        dlq = d.dlq_topic().read_records_to_list()
    assert len(dlq) == 1 and dlq[0].key == b"kb" and b'"bad"' in dlq[0].value
    h = dict(dlq[0].headers)
    assert b"injected failure" in h["kstreamlet.error.message"]
    assert (h["kstreamlet.source.topic"], h["kstreamlet.source.offset"]) == (b"in", b"0"), h


def test_values_the_serdes_cannot_encode_make_the_checkpoint_wait_instead() -> None:
    gate = Gate()
    gate.open = True
    app = App(application_id="async-ckpt-str")
    (app.stream("in", value_serde=serdes.STR)
        .map(lambda s: {"id": s})  # the stream's value serde (str) cannot encode a dict
        .map_async(gate, name="enrich")
        .map(lambda v: v["id"])
        .to("out", value_serde=serdes.STR))
    with TopologyTestDriver(app, wait_for_async=False) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("a")
        inp.pipe_input("b")
        got = d.output_topic("out", value_serde=serdes.STR).read_values_to_list()
        assert got == ["a", "b"], "drained at each checkpoint"
        assert d.key_value_store("enrich-async") == {}


def test_checkpoint_serdes_let_a_changed_value_be_held() -> None:
    gate = Gate()
    app = App(application_id="async-ckpt-json")
    (app.stream("in", value_serde=serdes.STR)
        .map(lambda s: {"id": s})
        .map_async(gate, name="enrich", checkpoint_value_serde=serdes.JSON)
        .map(lambda v: v["id"])
        .to("out", value_serde=serdes.STR))
    with TopologyTestDriver(app, wait_for_async=False) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("a")
        assert len(d.key_value_store("enrich-async")) == 1
        d.restart()
        gate.open = True
        d.settle_async()
        assert d.output_topic("out", value_serde=serdes.STR).read_values_to_list() == ["a"]


def test_the_forwarded_watermark_stays_below_a_held_record() -> None:
    gate = Gate()
    app = App(application_id="async-ckpt-wm")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON,
                watermarks=WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v["ts"]))
        .map_async(gate, name="enrich", ordered=False)
        .key_by(lambda v: "all", key_serde=serdes.STR)
        .window(TumblingEventTimeWindows.of(1000)).count()
        .to("out", key_serde=serdes.STR, value_serde=serdes.INT64))
    with TopologyTestDriver(app, wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        inp.pipe_input({"id": "slow", "ts": 100}, key="k")  # held across the checkpoints below
        for i, ts in enumerate([200, 300, 5000, 9000]):
            inp.pipe_input({"id": f"f{i}", "ts": ts, "fast": True}, key="k")
        assert d.output_topic("out", value_serde=serdes.INT64).read_values_to_list() == [], \
            "the window [0, 1000) must not close while a record of it is held"
        gate.open = True
        d.settle_async()
        inp.pipe_input({"id": "late", "ts": 20000, "fast": True}, key="k")
        counts = d.output_topic("out", value_serde=serdes.INT64).read_values_to_list()
    assert counts[0] == 3, f"the first window counts the held record too: {counts}"


def test_held_record_layout_round_trips_and_refuses_a_newer_version() -> None:
    class M:
        def topic(self): return "in"
        def partition(self): return 3
        def offset(self): return 42
        def timestamp(self): return (1, 777)
        def headers(self): return [("a", b"1"), ("b", None)]
        def key(self): return b"rk"
        def value(self): return None

    raw = encode_held(b"k", b"v", 123, M())
    k, v, ts, msg = decode_held(raw)
    assert (k, v, ts) == (b"k", b"v", 123)
    assert msg is not None and (msg.topic(), msg.partition(), msg.offset(), msg.timestamp()) == ("in", 3, 42, (1, 777))
    assert msg.headers() == [("a", b"1"), ("b", None)] and msg.key() == b"rk" and msg.value() is None
    assert decode_held(encode_held(None, None, 5, None))[3] is None
    with pytest.raises(RuntimeError, match="newer than this kstreamlet"):
        decode_held(bytes([9]) + raw[1:])


def test_uvloop_runs_the_operators_and_their_held_records() -> None:
    uvloop = pytest.importorskip("uvloop")  # the `async` extra (installed with `dev`)
    gate = Gate()
    app = App(application_id="async-uv", async_event_loop="uvloop")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        .map_async(gate, name="enrich", ordered=False, key_ordered=True)
        .to("out", key_serde=serdes.STR, value_serde=serdes.JSON))
    with TopologyTestDriver(app, wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        for i in range(4):
            inp.pipe_input({"id": f"r{i}"}, key="same")
        aio = d.async_runtime()
        assert aio is not None and isinstance(aio.loop, uvloop.Loop)
        d.restart()
        gate.open = True
        d.settle_async()
        assert _out(d) == ["r0", "r1", "r2", "r3"], "one key: its order kept across the restart"


def test_a_handover_checkpoint_first_lets_the_calls_finish_within_its_bound() -> None:
    class Slow:
        async def __call__(self, v: dict) -> dict:
            await asyncio.sleep(v["ms"] / 1000)
            return v

    app = App(application_id="async-settle")
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        .map_async(Slow(), name="enrich", concurrency=8)
        .to("out", key_serde=serdes.STR, value_serde=serdes.JSON))
    with TopologyTestDriver(app, wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        with d.one_checkpoint():
            inp.pipe_input({"id": "quick", "ms": 20}, key="k")
            inp.pipe_input({"id": "hangs", "ms": 60_000}, key="k2")
            aio = d.async_runtime()
            assert aio is not None
            aio.settle_next = 0.3  # as the member sets it before a commit on revocation / at shutdown
        assert _out(d) == ["quick"], "the quick call finished before the handover's commit"
        held = d.key_value_store("enrich-async")
        assert len(held) == 1, "the one still running is held, not waited for past the bound"
        assert aio.settle_next == 0.0, "only that one checkpoint settles"


def test_what_a_record_cache_flushes_into_an_async_operator_commits_in_that_checkpoint() -> None:
    async def describe(v: dict) -> str:
        await asyncio.sleep(0.005)
        return f"n={v['n']}"

    app = App(application_id="async-after-cache", record_cache_max_bytes=1 << 20)
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR)
        .key_by(lambda w: w, key_serde=serdes.STR)
        .count(name="counts")
        .map(lambda n: {"n": n})  # not encodable with the count's serde: this map_async is drained
        .map_async(lambda v: describe(v), name="describe")
        .to("out", key_serde=serdes.STR, value_serde=serdes.STR))
    with TopologyTestDriver(app, wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        with d.one_checkpoint():
            for w in ["a", "b", "a"]:
                inp.pipe_input(w, key=w)
        d.restart()  # a crash right after that checkpoint: what it flushed must be in it
        got = d.output_topic("out", value_serde=serdes.STR).read_values_to_list()
    assert sorted(got) == ["n=1", "n=2"], got


def test_what_a_record_cache_flushes_into_a_holding_async_operator_is_held_by_that_checkpoint() -> None:
    gate = Gate()

    async def describe(n: int) -> int:
        await gate({"id": str(n)})
        return n * 10

    app = App(application_id="async-after-cache-held", record_cache_max_bytes=1 << 20)
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR)
        .key_by(lambda w: w, key_serde=serdes.STR)
        .count(name="counts")
        .map_async(describe, name="describe")  # the count's serdes (str, int64) encode what it holds
        .to("out", key_serde=serdes.STR, value_serde=serdes.INT64))
    with TopologyTestDriver(app, wait_for_async=False) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
        with d.one_checkpoint():
            for w in ["a", "b", "a"]:
                inp.pipe_input(w, key=w)
        assert len(d.key_value_store("describe-async")) == 2, "the flushed counts are held, not lost"
        d.restart()
        gate.open = True
        d.settle_async()
        got = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.INT64).read_key_values_to_list()
    assert sorted(got) == [("a", 20), ("b", 10)], got

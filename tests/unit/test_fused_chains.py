"""Fused stateless chains (kstreamlet/topology/fusion.py): the same outputs, headers and dead-letter
records as one closure per operator, with the fuse_operators setting as the off switch."""

from __future__ import annotations

import itertools
import re
import traceback
from typing import Any, Callable

import pytest

from kstreamlet import App, KeyedProcessFunction, ValueStateDescriptor, serdes
from kstreamlet.errors import ConfigError, ProcessingError
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.topology import fusion

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARTITIONS = {"in": 3, "in2": 3}
#: What the peeks saw, (key, value) in call order; part of each run's result.
SEEN: list[tuple[Any, Any]] = []


def _records() -> list[tuple[str, str, int, list[tuple[str, bytes]] | None]]:
    out = []
    for i in range(40):
        headers: list[tuple[str, bytes]] | None
        if i % 3 == 0:
            headers = None
        elif i % 3 == 1:
            headers = [("traceparent", PARENT.encode()), ("tenant", f"t{i}".encode())]
        else:
            headers = [("kstreamlet.error.stage", b"process"), ("x", b"1")]
        out.append((f"k{i % 7}", f"w{i}" + ("x" if i % 5 == 0 else ""), 1_000 + i * 10, headers))
    return out


def _deterministic_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Span and trace ids from a counter, restarted per run, so two runs' headers compare equal."""
    from kstreamlet.topology import headers

    counter = itertools.count()
    monkeypatch.setattr(headers, "new_span_id", lambda: f"{next(counter):016x}")
    monkeypatch.setattr(headers, "new_trace_id", lambda: f"{next(counter) + 1:032x}")


def _kinds(driver: TopologyTestDriver) -> set[str]:
    """The qualified names of every function the tasks compiled: node pushes and source entries."""
    return {fn.__qualname__ for t in driver.tasks.values()
            for fn in [*t._compiled.values(), *t.on_message.values()]}


def _run(build: Callable[[App], None], fuse: bool, monkeypatch: pytest.MonkeyPatch,
         inputs: tuple[str, ...] = ("in",), **settings: Any) -> tuple[dict[str, list[Any]], list[str]]:
    """Every output (topic -> [(key, value, ts, headers)]) and the kinds of push functions the tasks compiled."""
    _deterministic_ids(monkeypatch)
    SEEN.clear()
    app = App(application_id="fused", fuse_operators=fuse, **settings)
    build(app)
    with TopologyTestDriver(app, wall_clock_ms=5_000, partitions=PARTITIONS) as driver:
        pipes = [driver.input_topic(t, key_serde=serdes.STR, value_serde=serdes.STR) for t in inputs]
        for i, (k, v, ts, h) in enumerate(_records()):
            pipes[i % len(pipes)].pipe_input(v, key=k, timestamp=ts, headers=h)
        driver.advance_wall_clock_time(60_000)
        kinds = sorted(_kinds(driver))
        outputs = {t: list(q) for t, q in driver._outputs.items()}
    outputs["peeked"] = list(SEEN)
    return outputs, kinds


def _chain(app: App) -> None:
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR)
        .map(str.upper).filter(lambda v: "X" not in v).flat_map(lambda v: [v + "!", v, v + "?"])
        .filter(lambda v: not v.endswith("!") or "1" in v)
        .peek(lambda k, v: SEEN.append((k, v))).map(lambda v: v + "?").to("out", value_serde=serdes.STR))


def _raw_bytes(app: App) -> None:
    # Default serdes (bytes in, bytes out): the source's raw path and the sink's push_raw, inlined.
    app.stream("in").map(bytes.upper).filter(lambda v: b"X" not in v).to("out")


def _branches(app: App) -> None:
    s = app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).map(str.lower)
    a, b, rest = s.branch(lambda v: v.endswith("1"), lambda v: v.endswith("2"))
    a.map(lambda v: "a:" + v).to("out-a")
    b.filter(lambda v: len(v) > 2).map(lambda v: "b:" + v).to("out-b")
    rest.flat_map(lambda v: [v] * 2).to("out-rest")


def _branch_no_default(app: App) -> None:
    s = app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).map(str.lower).filter(lambda v: v != "w3")
    (first,) = s.branch(lambda v: v[-1] in "357", default=False)
    first.to("out")


def _merge_and_fan_out(app: App) -> None:
    a = app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).map(lambda v: "a" + v)
    b = app.stream("in2", key_serde=serdes.STR, value_serde=serdes.STR).filter(lambda v: "x" not in v)
    m = a.merge(b).map(str.upper)
    m.map(lambda v: v + "1").to("out1")
    m.peek(lambda k, v: SEEN.append((k, v))).to("out2", headers="drop")
    m.filter(lambda v: v.endswith("0")).to("out3", headers=lambda k, v, h: h + [("seen", v.encode())])


def _repartition(app: App) -> None:
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).map(lambda v: v.strip("x"))
        .flat_map(lambda v: [v, v + "b"]).peek(lambda k, v: SEEN.append((k, v)))
        .key_by(lambda v: v[-1], key_serde=serdes.STR).map(lambda v: v + "#").filter(bool).to("out"))


class Ticker(KeyedProcessFunction):
    """Counts per key; each record sets a processing-time timer that emits the count."""

    def open(self, ctx: Any) -> None:
        self.n = ctx.get_state(ValueStateDescriptor("n", serdes.INT64))

    def process_element(self, value: Any, ctx: Any) -> None:
        self.n.update((self.n.value() or 0) + 1)
        ctx.emit(value)
        ctx.timers.register_processing_time(ctx.timers.current_processing_time() + 1_000)

    def on_timer(self, ts: int, ctx: Any) -> None:
        ctx.emit(f"timer:{self.n.value()}")


def _keyed_then_chain(app: App) -> None:
    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).map(str.upper).keyed()
        .process(Ticker(), name="ticker").map(lambda v: v + ".").filter(lambda v: "W1" not in v)
        .to("out", value_serde=serdes.STR))


def _process_breaks(app: App) -> None:
    def tag(v: Any, ctx: Any) -> None:
        # Reads the record context: it cannot be fused, and sees the same headers either way.
        names = ",".join(n for n, _ in ctx.headers)
        ctx.emit(f"{v}|{ctx.topic}/{ctx.partition}@{ctx.offset}|{names}")
        if v.endswith("X"):
            ctx.side_output("odd", v)

    p = (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).map(str.upper).map(lambda v: v + "-")
         .process(tag, name="tag"))
    p.map(lambda v: v + "+").map(lambda v: v * 1).to("out")
    p.side_output("odd").map(str.lower).filter(lambda v: True).to("out-odd")


def _async_breaks(app: App) -> None:
    async def enrich(v: str) -> str:
        return v + "@"

    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR).map(str.upper).filter(lambda v: "X" not in v)
        .map_async(enrich, concurrency=4).map(lambda v: v + "+").peek(lambda k, v: SEEN.append((k, v))).to("out"))


TOPOLOGIES: dict[str, tuple[Callable[[App], None], tuple[str, ...]]] = {
    "map-filter-flat_map-peek": (_chain, ("in",)),
    "raw-bytes": (_raw_bytes, ("in",)),
    "branches": (_branches, ("in",)),
    "branch-without-default": (_branch_no_default, ("in",)),
    "merge-and-fan-out": (_merge_and_fan_out, ("in", "in2")),
    "repartition": (_repartition, ("in",)),
    "keyed-process-and-timers": (_keyed_then_chain, ("in",)),
    "process-breaks-the-chain": (_process_breaks, ("in",)),
    "async-breaks-the-chain": (_async_breaks, ("in",)),
}


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_fused_and_unfused_write_the_same_records_and_headers(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    build, inputs = TOPOLOGIES[name]
    fused, fused_kinds = _run(build, True, monkeypatch, inputs)
    plain, plain_kinds = _run(build, False, monkeypatch, inputs)
    assert fused == plain
    assert sum(len(v) for v in fused.values()) >= 5, "the topology writes something"
    assert any("fused_" in k for k in fused_kinds), f"nothing was fused: {fused_kinds}"
    assert not any("fused_" in k for k in plain_kinds), "fuse_operators=False fuses nothing"


def test_headers_and_tracing_through_fused_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inlined plain sink continues traceparent, strips kstreamlet.* and keeps other headers as the
    sink's own push_fast does; with tracing on the sink is called (not inlined) and still agrees."""
    fused, _ = _run(_chain, True, monkeypatch)
    plain, _ = _run(_chain, False, monkeypatch)
    headers = [h for _, _, _, h in fused["out"]]
    assert headers == [h for _, _, _, h in plain["out"]]
    assert [] in headers and any(n == "tenant" for h in headers for n, _ in h)
    assert not any(n.startswith("kstreamlet.") for h in headers for n, _ in h)
    tps = [v for h in headers for n, v in h if n == "traceparent"]
    assert tps and all(v.startswith(b"00-0af7651916cd43dd8448eb211c80319c-") and PARENT.encode() != v for v in tps)
    assert _run(_chain, True, monkeypatch, tracing="w3c")[0] == _run(_chain, False, monkeypatch, tracing="w3c")[0]


def _three_maps(app: App) -> None:
    def second(v: str) -> str:
        if "x" in v:
            raise ValueError(f"second map refuses {v!r}")
        return v + "2"

    (app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR)
        .flat_map(lambda v: [v.rstrip("x"), v], name="split").map(lambda v: v + "1", name="first")
        .map(second, name="second").map(lambda v: v + "3", name="third").to("out"))


def test_a_failure_in_the_second_of_three_fused_maps_dead_letters_as_unfused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under error_policy=dlq: the same DLQ records (headers: stage, type, message, source) and the
    same outputs, including those the record sent before its failing element."""
    fused, kinds = _run(_three_maps, True, monkeypatch)
    plain, _ = _run(_three_maps, False, monkeypatch)
    assert "make.<locals>.fused_source" in kinds
    assert fused == plain
    dlq = fused["fused-dlq"]
    assert len(dlq) == 8  # w0x, w5x, ..., w35x
    headers = dict(dlq[0][3])
    assert headers["kstreamlet.error.stage"] == b"process"
    assert headers["kstreamlet.error.type"] == b"ValueError"
    assert headers["kstreamlet.error.message"] == b"second map refuses 'w0x1'"
    assert dlq[0][1] == b"w0x", "the input record's own bytes"
    assert fused["out"][0][1] == b"w0123", "the element before the failing one was written"


def test_under_fail_the_error_and_its_traceback_name_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = {}
    for fuse in (True, False):
        _deterministic_ids(monkeypatch)
        app = App(application_id="fused", fuse_operators=fuse, error_policy="fail")
        _three_maps(app)
        with TopologyTestDriver(app, partitions=PARTITIONS) as driver:
            inp = driver.input_topic("in", key_serde=serdes.STR, value_serde=serdes.STR)
            with pytest.raises(ProcessingError) as info:
                inp.pipe_input("ax", key="k", timestamp=1)
            errors[fuse] = info.value
    assert str(errors[True]) == str(errors[False])
    assert type(errors[True].__cause__) is ValueError
    tb = "".join(traceback.format_exception(errors[True].__cause__))
    # The fused frame's file names each local's operator; its line shows which local failed.
    assert re.search(r"fused chain [0-9a-f]{8}: f0=split, f1=first, f2=second, f3=third, sink=", tb), tb
    assert "v = f2(v)" in tb
    assert "in second" in tb  # the user function's own frame


def test_the_off_switch_and_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert App(application_id="a").settings.fuse_operators is True
    monkeypatch.setenv("KSTREAMLET_FUSE_OPERATORS", "false")
    app = App(application_id="a")
    assert app.settings.fuse_operators is False
    _chain(app)
    with TopologyTestDriver(app, partitions=PARTITIONS) as driver:
        assert not any("fused" in k for k in _kinds(driver))
    monkeypatch.setenv("KSTREAMLET_FUSE_OPERATORS", "sometimes")
    with pytest.raises(ConfigError, match=r"fuse_operators \(env KSTREAMLET_FUSE_OPERATORS\)"):
        App(application_id="a").settings  # noqa: B018


def test_describe_is_the_same_fused_or_not() -> None:
    texts = []
    for fuse in (True, False):
        app = App(application_id="d", fuse_operators=fuse)
        _merge_and_fan_out(app)
        texts.append(re.sub(r"\d+", "N", str(app.describe()) + str(app.describe(format="json"))))
    assert texts[0] == texts[1]


def test_where_a_chain_starts_and_ends() -> None:
    """A process node breaks the chain; the runs before and after it are fused separately, and no
    operator is compiled twice."""
    app = App(application_id="c")
    _process_breaks(app)
    with TopologyTestDriver(app, partitions=PARTITIONS) as driver:
        task = driver.tasks[(0, 0)]
        st = task.subtopology
        by_kind = {n.name: n for n in st.nodes}
        process = by_kind["tag"]
        assert [type(n).__name__ for n in fusion.chain_of(st.sources["in"].children[0])] == ["MapNode", "MapNode"]
        assert fusion.chain_of(process) == []
        fused = {fn.__qualname__.rsplit(".", 1)[-1] for fn in [*task._compiled.values(), *task.on_message.values()]
                 if "fused" in fn.__qualname__}
        # the source with the maps before process; after it; its side output
        assert task.on_message["in"].__qualname__.endswith("fused_source")
        assert len({id(fn) for fn in task._compiled.values() if fn.__qualname__.endswith("fused_chain")}) == 2
        assert fused == {"fused_source", "fused_chain"}


def test_long_chains_and_odd_operator_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """More nested flat_maps than CPython nests blocks, and names that are not identifiers: the
    chain splits, names only reach the file name, never the code."""
    def build(app: App) -> None:
        s = app.stream("in", key_serde=serdes.STR, value_serde=serdes.STR)
        for i in range(40):
            s = s.flat_map(lambda v: [v], name=f"fm {i}\nimport os; os._exit(1) #") if i % 2 else \
                s.map(lambda v, i=i: v + str(i % 10), name=f"m'{i}\"")
        s.to("out")

    fused, kinds = _run(build, True, monkeypatch)
    assert fused == _run(build, False, monkeypatch)[0]
    assert len(fused["out"]) == 40 and any("fused_" in k for k in kinds)


class _Collector:
    errors = None

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send(self, *record: Any) -> None:
        self.sent.append(record)


class _NoTimestamp:
    """A record whose timestamp type is TIMESTAMP_NOT_AVAILABLE: the task uses processing time."""

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return (0, -1)

    def headers(self) -> None:
        return None

    def topic(self) -> str:
        return "in"


def test_a_record_without_timestamp_gets_processing_time_in_the_fused_source() -> None:
    from kstreamlet.runtime.task import Task

    sent = {}
    for fuse in (True, False):
        app = App(application_id="ts", fuse_operators=fuse)
        app.stream("in").map(bytes.upper).to("out")
        collector = _Collector()
        task = Task(app.topology().subtopologies[0], 0, collector, lambda t: 1, clock=lambda: 77,
                    settings=app.settings)
        assert task.on_message["in"].__qualname__.endswith("fused_source") is fuse
        task.on_message["in"](_NoTimestamp())
        sent[fuse] = collector.sent
    assert sent[True] == sent[False] == [("out", b"k", b"V", 77, -1, None)]

"""Header propagation and W3C trace context through the TopologyTestDriver
(topology/headers.py, observability/tracing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kstreamlet import App, serdes
from kstreamlet.errors import ConfigError
from kstreamlet.observability import tracing
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.topology.headers import parse_traceparent
from kstreamlet.windowing import TumblingEventTimeWindows

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TP = f"00-{TRACE}-{PARENT}-01".encode()


def _tp(headers: list[tuple[str, bytes]]) -> tuple[str, str, str, str]:
    found = [v for k, v in headers if k == "traceparent"]
    assert len(found) == 1, f"one traceparent expected in {headers}"
    tp = parse_traceparent(found[0])
    assert tp is not None, f"invalid traceparent {found[0]!r}"
    return tp


def test_input_headers_reach_outputs_internal_stripped_traceparent_continued() -> None:
    app = App(application_id="h", state_backend="memory")
    app.stream("in", value_serde=serdes.STR).flat_map(lambda s: [s.upper(), s]).to("out")
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("x", headers=[("tenant", b"acme"), ("kstreamlet.watermark", b"5"), ("traceparent", TP)])
        inp.pipe_input("y", headers=[("traceparent", TP)])
        rec, twin, other, _ = d.output_topic("out", value_serde=serdes.STR).read_records_to_list()
    # The outputs of one input record share the hop's span id; another input gets another one.
    assert _tp(twin.headers)[2] == _tp(rec.headers)[2] != _tp(other.headers)[2]
    names = [k for k, _ in rec.headers]
    assert ("tenant", b"acme") in rec.headers
    assert not [n for n in names if n.startswith("kstreamlet.")], "internal headers must be stripped"
    version, trace_id, span_id, flags = _tp(rec.headers)
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert span_id != PARENT, "each hop has a new span id"


def test_headers_survive_a_repartition_and_a_new_span_per_hop() -> None:
    app = App(application_id="h", state_backend="memory")
    (app.stream("in", value_serde=serdes.JSON)
        .flat_map(lambda v: [v, {**v, "copy": True}])
        .key_by(lambda v: v["k"], key_serde=serdes.STR)
        .to("out"))
    with TopologyTestDriver(app, partitions={"in": 2, "out": 2}) as d:
        inp = d.input_topic("in", value_serde=serdes.JSON)
        inp.pipe_input({"k": "a"}, headers=[("tenant", b"acme"), ("traceparent", TP)], partition=0)
        inp.pipe_input({"k": "b"}, headers=[("traceparent", TP)], partition=1)
        recs = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()
    assert len(recs) == 4
    by_key: dict[str, list[Any]] = {}
    for r in recs:
        by_key.setdefault(r.key, []).append(r)
    assert all(("tenant", b"acme") in r.headers for r in by_key["a"])
    assert all("tenant" not in dict(r.headers) for r in by_key["b"])
    assert all(_tp(r.headers)[1] == TRACE for r in recs)
    # Two hops (in -> repartition topic -> out): each repartition record is its own input of the
    # second hop, so every output has its own span id.
    spans = {_tp(r.headers)[2] for r in recs}
    assert len(spans) == 4 and PARENT not in spans


def test_sink_headers_drop_and_callable() -> None:
    app = App(application_id="h", state_backend="memory")
    s = app.stream("in", value_serde=serdes.STR)
    s.to("dropped", headers="drop")
    s.to("custom", headers=lambda k, v, h: h + [("len", str(len(v)).encode())])
    with pytest.raises(ValueError, match="headers="):
        s.to("bad", headers="keep")
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("abc", headers=[("tenant", b"acme"), ("traceparent", TP)])
        inp.pipe_input("de", headers=[("tenant", b"acme")])
        dropped = d.output_topic("dropped", value_serde=serdes.STR).read_records_to_list()
        custom = d.output_topic("custom", value_serde=serdes.STR).read_records_to_list()
    assert [k for k, _ in dropped[0].headers] == ["traceparent"], "drop keeps the trace going"
    assert dropped[1].headers == []
    assert ("len", b"3") in custom[0].headers and ("tenant", b"acme") in custom[0].headers
    assert custom[1].headers == [("tenant", b"acme"), ("len", b"2")]


def test_no_traceparent_is_invented_unless_tracing_is_on() -> None:
    for mode, invented in (("off", False), ("w3c", True)):
        app = App(application_id="h", state_backend="memory", tracing=mode)
        app.stream("in").to("out")
        with TopologyTestDriver(app) as d:
            d.input_topic("in").pipe_input(b"x")
            d.input_topic("in").pipe_input(b"y", headers=[("traceparent", b"garbage")])
            recs = d.output_topic("out").read_records_to_list()
        for r in recs:
            if invented:
                assert _tp(r.headers)[1] != TRACE
            else:
                assert r.headers == [], f"tracing off: no traceparent invented, a malformed one dropped ({mode})"


def test_aggregate_outputs_carry_the_triggering_record_headers_windows_fired_by_time_none() -> None:
    app = App(application_id="h", state_backend="memory")
    keyed = app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON).keyed()
    keyed.count().to("counts", value_serde=serdes.INT64)
    keyed.window(TumblingEventTimeWindows.of(10)).count().to("windowed", value_serde=serdes.INT64)
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
        inp.pipe_input(1, key="a", timestamp=1, headers=[("n", b"1"), ("traceparent", TP)])
        inp.pipe_input(2, key="a", timestamp=2, headers=[("n", b"2")])
        inp.pipe_input(3, key="a", timestamp=30, headers=[("n", b"3")])  # fires [0,10)
        counts = d.output_topic("counts", key_serde=serdes.STR, value_serde=serdes.INT64).read_records_to_list()
        windowed = d.output_topic("windowed", key_serde=serdes.STR, value_serde=serdes.INT64).read_records_to_list()
    assert [(r.value, dict(r.headers).get("n")) for r in counts] == [(1, b"1"), (2, b"2"), (3, b"3")]
    assert _tp(counts[0].headers)[1] == TRACE
    assert [r.value for r in windowed] == [2]
    assert windowed[0].headers == [], "a window fired by the watermark combines records: no input headers"


# --- OpenTelemetry ----------------------------------------------------------------------------------

@pytest.fixture
def spans() -> Any:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure("otel")
    try:
        yield provider, exporter
    finally:
        tracing.configure("off")


def test_record_span_is_a_child_of_the_record_trace_and_a_noop_when_off(spans: Any) -> None:
    provider, exporter = spans
    from opentelemetry import trace

    trace._TRACER_PROVIDER = None  # noqa: SLF001 - isolate from other tests
    trace.set_tracer_provider(provider)
    with tracing.record_span("lookup", [("traceparent", TP)], {"customer": "c1"}) as span:
        assert span is not None
        carrier = tracing.inject()
    (done,) = exporter.get_finished_spans()
    assert done.name == "lookup" and format(done.context.trace_id, "032x") == TRACE
    assert format(done.parent.span_id, "016x") == PARENT
    assert parse_traceparent(carrier["traceparent"])[1] == TRACE  # type: ignore[index]
    tracing.configure("off")
    with tracing.record_span("nothing", [("traceparent", TP)]) as none:
        assert none is None
    assert parse_traceparent(tracing.inject([("traceparent", TP)])["traceparent"])[1] == TRACE  # type: ignore[index]


def test_checkpoint_spans(spans: Any) -> None:
    provider, exporter = spans
    cs = tracing.CheckpointSpans("app", "i-0", tracer=provider.get_tracer("t"))
    cs.before_batch(None, [1, 2])
    cs.on_batch(None, [1, 2], 2)
    cs.before_batch(None, [3])
    cs.on_batch(None, [3], 1)
    cs.on_commit(None, 0.01)
    cs.on_commit(None, 0.01)  # a commit without records opens no span
    (done,) = exporter.get_finished_spans()
    assert done.name == "kstreamlet.checkpoint"
    assert done.attributes["kstreamlet.checkpoint.records"] == 3
    assert done.attributes["kstreamlet.checkpoint.batches"] == 2


def test_tracing_otel_fails_fast_without_opentelemetry(monkeypatch: Any) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "opentelemetry" else real(n, *a))
    with pytest.raises(ConfigError, match="tracing.*KSTREAMLET_TRACING.*kstreamlet\\[otel\\]"):
        App(application_id="h", tracing="otel")


def test_member_adds_checkpoint_spans_only_with_tracing_otel() -> None:
    pytest.importorskip("opentelemetry")
    from kstreamlet.runtime.member import Member

    try:
        for mode, expected in (("off", False), ("w3c", False), ("otel", True)):
            app = App(application_id="h", state_backend="memory", tracing=mode)
            app.stream("in").to("out")
            m = Member(app, "m1", install_signal_handlers=False)
            assert any(isinstance(x, tracing.CheckpointSpans) for x in m.listeners) is expected, mode
            if mode != "off":
                assert tracing.mode() == mode, "the member sets the process's tracing mode"
    finally:
        tracing.configure("off")

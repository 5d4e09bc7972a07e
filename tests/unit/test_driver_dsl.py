"""The DSL's operators, pinned through the broker-free TopologyTestDriver."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from kstreamlet import App, ConfigError, TopologyError, serdes
from kstreamlet.testing import TopologyTestDriver


def make_app(**kw):
    kw.setdefault("bootstrap_servers", "127.0.0.1:1")
    return App(application_id="t", **kw)


def test_map_filter_flat_map_peek_chain():
    app = make_app()
    seen = []
    (app.stream("in", value_serde=serdes.STR)
        .flat_map(str.split)
        .filter(lambda w: len(w) > 2)
        .peek(lambda k, v: seen.append(v))
        .map(str.upper)
        .to("out"))
    with TopologyTestDriver(app) as d:
        d.input_topic("in", value_serde=serdes.STR).pipe_input("the quick brown ox", timestamp=5)
        out = d.output_topic("out", value_serde=serdes.STR).read_records_to_list()
    assert [r.value for r in out] == ["THE", "QUICK", "BROWN"], out
    assert all(r.timestamp == 5 for r in out), "outputs keep the input record's timestamp"
    assert seen == ["the", "quick", "brown"]


def test_key_by_repartitions_and_sets_key():
    app = make_app()
    app.stream("in", value_serde=serdes.JSON).key_by(lambda v: v["user"], key_serde=serdes.STR).to("out")
    assert len(app.topology().subtopologies) == 2, app.topology().describe()
    assert "t-key_by-0-repartition" in app.topology().internal_topics
    with TopologyTestDriver(app) as d:
        d.input_topic("in", value_serde=serdes.JSON).pipe_input({"user": "u1", "n": 1})
        kv = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON).read_key_value()
    assert kv == ("u1", {"user": "u1", "n": 1})


def test_branch_first_match_wins_and_default_gets_the_rest():
    app = make_app()
    small, big, rest = app.stream("in", value_serde=serdes.INT64).branch(lambda n: n < 10, lambda n: n < 100)
    small.to("small")
    big.to("big")
    rest.to("rest")
    with TopologyTestDriver(app) as d:
        d.input_topic("in", value_serde=serdes.INT64).pipe_values([1, 50, 500, 5])
        got = {t: d.output_topic(t, value_serde=serdes.INT64).read_values_to_list() for t in ("small", "big", "rest")}
    assert got == {"small": [1, 5], "big": [50], "rest": [500]}


def test_process_context_emit_side_output_and_metadata():
    app = make_app()

    def fn(value, ctx):
        if value.startswith("!"):
            ctx.side_output("alerts", f"{ctx.topic}:{ctx.partition}:{ctx.offset}:{value}")
        else:
            ctx.emit(value * 2, key=value.encode(), timestamp=ctx.timestamp + 1)

    main = app.stream("in", value_serde=serdes.STR).process(fn)
    main.to("out")
    main.side_output("alerts").to("alerts")
    with TopologyTestDriver(app) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        inp.pipe_input("ab", timestamp=10)
        inp.pipe_input("!x", timestamp=11)
        out = d.output_topic("out", value_serde=serdes.STR).read_records_to_list()
        alerts = d.output_topic("alerts", value_serde=serdes.STR).read_values_to_list()
    assert [(r.key, r.value, r.timestamp) for r in out] == [(b"ab", "abab", 11)]
    assert alerts == ["in:0:1:!x"]


def test_merge_processes_by_timestamp_in_driver_order():
    app = make_app()
    a = app.stream("a", value_serde=serdes.STR)
    b = app.stream("b", value_serde=serdes.STR)
    a.merge(b).map(str.upper).to("out")
    topo = app.topology()
    assert len(topo.subtopologies) == 1 and set(topo.subtopologies[0].topics) == {"a", "b"}
    with TopologyTestDriver(app) as d:
        d.input_topic("a", value_serde=serdes.STR).pipe_input("x", timestamp=1)
        d.input_topic("b", value_serde=serdes.STR).pipe_input("y", timestamp=2)
        assert d.output_topic("out", value_serde=serdes.STR).read_values_to_list() == ["X", "Y"]


class Reading(BaseModel):
    id: str
    temperature: float


def test_pydantic_serde_and_bad_record_goes_to_dlq_with_headers():
    app = make_app()
    app.stream("in", value_serde=serdes.pydantic(Reading)).map(lambda r: r.temperature * 2).to("out", value_serde=serdes.JSON)
    with TopologyTestDriver(app) as d:
        raw = d.input_topic("in")
        raw.pipe_input(b'{"id": "s1", "temperature": 1.5}')
        raw.pipe_input(b'not json')
        raw.pipe_input(b'{"id": "s2", "temperature": 2}')
        assert d.output_topic("out", value_serde=serdes.JSON).read_values_to_list() == [3.0, 4.0]
        dlq = d.dlq_topic().read_records_to_list()
    assert len(dlq) == 1 and dlq[0].value == b"not json", dlq
    headers = dict(dlq[0].headers)
    assert headers["kstreamlet.error.stage"] == b"deserialize"
    assert headers["kstreamlet.error.type"] == b"ValidationError"
    assert headers["kstreamlet.source.offset"] == b"1"
    assert headers["kstreamlet.source.topic"] == b"in"


def test_user_exception_skip_and_fail_policies():
    def boom(v):
        if v == "bad":
            raise ValueError("boom")
        return v

    skip = make_app(error_policy="skip")
    skip.stream("in", value_serde=serdes.STR).map(boom).to("out")
    with TopologyTestDriver(skip) as d:
        d.input_topic("in", value_serde=serdes.STR).pipe_values(["a", "bad", "b"])
        assert d.output_topic("out", value_serde=serdes.STR).read_values_to_list() == ["a", "b"]
        assert d.dlq_topic().is_empty()

    fail = make_app(error_policy="fail")
    fail.stream("in", value_serde=serdes.STR).map(boom).to("out")
    from kstreamlet import ProcessingError

    with TopologyTestDriver(fail) as d, pytest.raises(ProcessingError, match=r"boom.*in\[0\]@1"):
        d.input_topic("in", value_serde=serdes.STR).pipe_values(["a", "bad"])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"processing_guarantee": "twice"}, "processing_guarantee"),
        ({"commit_interval": 0}, "commit_interval"),
        ({"bootstrap_servers": "nohostport"}, "bootstrap_servers"),
        ({"kafka_config": {"group.id": "x"}}, "kafka_config"),
    ],
)
def test_bad_config_fails_fast_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        make_app(**kwargs)


def test_bad_application_id_names_field_and_env(monkeypatch):
    with pytest.raises(ConfigError, match=r"application_id \(env KSTREAMLET_APPLICATION_ID\)"):
        App(application_id="has space")


def test_env_configures_the_app(monkeypatch):
    monkeypatch.setenv("KSTREAMLET_COMMIT_INTERVAL", "2.5")
    monkeypatch.setenv("KSTREAMLET_PROCESSING_GUARANTEE", "at_least_once")
    app = App(application_id="envy")
    assert app.settings.commit_interval == 2.5
    assert app.settings.processing_guarantee == "at_least_once"


def test_empty_topology_is_an_error():
    with pytest.raises(TopologyError, match="defines no streams"):
        make_app().topology()

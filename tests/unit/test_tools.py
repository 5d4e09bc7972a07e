"""The operator commands without a broker: argument parsing, header splitting, store discovery,
decoding of every decodable store layout, key parsing, reset plans' topic sets and positions."""

from __future__ import annotations

import argparse
import struct

import pytest

from kstreamlet import (
    App,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapStateDescriptor,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    serdes,
)
from kstreamlet.cli import main
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.codec import BIAS, TIMESTAMP, key_prefix, window_key
from kstreamlet.state.keyed import (
    AggregatingStateDescriptor,
    KeyContext,
    ListState,
    MapState,
    StateTtlConfig,
    ValueState,
)
from kstreamlet.state.store import Store
from kstreamlet.tools import dlq, reset, state, topics
from kstreamlet.errors import InspectionError
from kstreamlet.tools.common import ToolError, jsonable, parse_datetime_ms, parse_duration


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kstreamlet")
    sub = p.add_subparsers(dest="cmd", required=True)
    for m in (topics, dlq, state, reset):
        m.add_parser(sub)
    return p


# --- parsing ---------------------------------------------------------------------------------------

def test_topics_arguments():
    a = _parser().parse_args(["topics", "create", "t1", "t2", "-p", "6", "--config", "cleanup.policy=compact",
                              "-c", "retention.ms=-1", "--replication-factor", "3"])
    assert (a.names, a.partitions, a.replication_factor) == (["t1", "t2"], 6, 3)
    assert topics.parse_configs(a.config) == {"cleanup.policy": "compact", "retention.ms": "-1"}
    with pytest.raises(ValueError, match="key=value"):
        topics.parse_configs(["compact"])
    assert _parser().parse_args(["topics", "list", "--all", "--json"]).all


def test_delete_without_yes_refuses_before_connecting(capsys):
    assert main(["topics", "delete", "precious", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "--yes" in capsys.readouterr().err


def test_create_rejects_names_mixed_with_an_app(capsys):
    assert main(["topics", "create", "a", "mod:app"]) == 2
    assert "not both" in capsys.readouterr().err


def test_every_command_has_help_with_examples(capsys):
    for argv in (["topics", "create"], ["topics", "list"], ["topics", "describe"], ["topics", "delete"],
                 ["reset"], ["state", "get"], ["state", "scan"], ["state", "stores"], ["dlq", "show"],
                 ["dlq", "replay"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and "kstreamlet " in out.split("examples:")[1], argv
        assert "--bootstrap-servers" in out, argv


def test_durations_and_times():
    assert parse_duration("PT1H") == 3600
    assert parse_duration("P1DT2H30M") == 86400 + 2 * 3600 + 1800
    assert parse_duration("PT0.5S") == 0.5
    assert parse_duration("pt15m") == 900
    assert parse_duration("90") == 90
    for bad in ("P", "PT", "1h", "-5", "P1Y"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_datetime_ms("1970-01-01T00:00:01Z") == 1000
    assert parse_datetime_ms("1970-01-01T01:00:01+01:00") == 1000
    assert parse_datetime_ms("1970-01-02") == 86_400_000  # no offset: UTC
    with pytest.raises(ValueError):
        parse_datetime_ms("yesterday")


def test_reset_positions():
    p = _parser()

    def pos(*argv: str) -> reset.Position:
        return reset.position_from_args(p.parse_args(["reset", "m:app", *argv]), now_ms=10_000_000)

    assert pos() == reset.Position("earliest")
    assert pos("--to-earliest") == reset.Position("earliest")
    assert pos("--to-datetime", "1970-01-01T00:00:02Z") == reset.Position("timestamp", 2000)
    assert pos("--by-duration", "PT1H") == reset.Position("timestamp", 10_000_000 - 3_600_000)
    assert pos("--by-duration", "60") == reset.Position("timestamp", 10_000_000 - 60_000)
    assert pos("--to-offset", "5") == reset.Position("offset", 5)
    for bad in (["--to-offset", "1", "--by-duration", "PT1H"], ["--by-duration", "soon"], ["--to-offset", "-1"]):
        with pytest.raises(ToolError):
            pos(*bad)


# --- dead letters ----------------------------------------------------------------------------------

DLQ_HEADERS = [("kstreamlet.error.stage", b"process"), ("kstreamlet.error.type", b"ValueError"),
               ("kstreamlet.error.message", b"bad"), ("kstreamlet.source.topic", b"in"),
               ("kstreamlet.source.partition", b"2"), ("kstreamlet.source.offset", b"41"),
               ("kstreamlet.source.timestamp", b"1000"), ("kstreamlet.application.id", b"app")]


def test_split_headers_keeps_the_records_own_headers_even_with_dlq_names():
    own = [("trace", b"t1"), ("kstreamlet.error.type", b"mine"), ("trace", b"t2")]
    got, rest = dlq.split_headers(DLQ_HEADERS + own)
    assert rest == own
    assert got["kstreamlet.source.offset"] == b"41" and len(got) == len(DLQ_HEADERS)
    got, rest = dlq.split_headers(DLQ_HEADERS + own + [("kstreamlet.dlq.truncated", b"cut")])
    assert rest == own and got["kstreamlet.dlq.truncated"] == b"cut"
    assert dlq.split_headers(None) == ({}, [])


def _dead_letter(headers, key=b"k", value=b"v") -> dlq.DeadLetter:
    d, rest = dlq.split_headers(headers)
    return dlq.DeadLetter(0, 7, 1000, key, value, d, rest)


def test_dead_letter_fields_and_replayability():
    d = _dead_letter(DLQ_HEADERS + [("h", b"1")], key=b"\xff\x00")
    assert (d.stage, d.error_type, d.source_topic, d.source_partition, d.source_offset, d.source_timestamp) == (
        "process", "ValueError", "in", 2, 41, 1000)
    assert d.not_replayable() is None
    j = d.to_json()
    assert j["key_base64"] == "/wA=" and j["value"] == "v" and j["headers"] == [["h", "1"]]
    assert "in[2]@41" in d.to_text()
    timer = _dead_letter([("kstreamlet.error.stage", b"timer"), ("kstreamlet.error.type", b"E"),
                          ("kstreamlet.error.message", b"m"), ("kstreamlet.timer.operator", b"op"),
                          ("kstreamlet.timer.key", b"k"), ("kstreamlet.timer.domain", b"event"),
                          ("kstreamlet.timer.timestamp", b"5"), ("kstreamlet.task", b"0_1"),
                          ("kstreamlet.application.id", b"app")], value=None)
    assert timer.not_replayable() == "no source record" and timer.headers == []
    truncated = _dead_letter(DLQ_HEADERS + [("kstreamlet.dlq.truncated", b"cut")])
    assert truncated.not_replayable() == "truncated"
    f = dlq.Filter(error_type="ValueError", source_topic="in")
    assert f.matches(d) and not dlq.Filter(error_type="KeyError").matches(d)
    assert not dlq.Filter(source_topic="other").matches(d)


# --- stores ------------------------------------------------------------------------------------------

class Remember(KeyedProcessFunction):
    def open(self, ctx):  # type: ignore[no-untyped-def]
        self.seen = ctx.get_list_state(ListStateDescriptor("seen", serdes.STR))
        self.per = ctx.get_map_state(MapStateDescriptor("per", serdes.STR, serdes.INT64))
        self.last = ctx.get_state(ValueStateDescriptor("last", serdes.JSON, ttl=StateTtlConfig(60)))
        self.ops = ctx.get_operator_list_state(ListStateDescriptor("ops", serdes.INT64))

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        pass

    def on_timer(self, ts, ctx):  # type: ignore[no-untyped-def]
        pass


def _app() -> App:
    app = App(application_id="tools-unit")
    keyed = app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, key_serde=serdes.STR, name="w")
    keyed.count(name="counts").to("out", value_serde=serdes.INT64)
    keyed.process(Remember(), name="rem")
    keyed.window(TumblingEventTimeWindows.of(1000)).count(name="win")
    app.source(lambda: iter([]), name="gen").to("out")
    return app


def test_discovers_every_store_with_its_kind_and_changelog():
    stores = state.discover_stores(_app())
    assert {n: s.kind for n, s in stores.items()} == {
        "counts-value": "value", "rem-seen": "list", "rem-per": "map", "rem-last": "value",
        "rem-ops": "operator-list", "rem-timers": "timers", "win-windows": "window", "win-timers": "timers"}
    assert stores["counts-value"].changelog == "tools-unit-counts-value-changelog"
    assert all(s.key_serde is serdes.STR for s in stores.values())
    assert state.find_store(stores, "counts").name == "counts-value"  # the operator's one store
    assert state.find_store(stores, "win").name == "win-windows"  # timers do not count
    with pytest.raises(InspectionError, match="rem-last"):
        state.find_store(stores, "rem")


def _store() -> Store:
    return Store("s", 0, MemoryBackend(), None, None)


def _entries(store: Store) -> dict[bytes, tuple[int, bytes]]:
    """What the changelog holds after the store's buffered writes (tombstones dropped)."""
    return {k: (0, v) for k, v in store.buffer.items() if v is not None}


def test_decodes_value_list_map_ttl_and_operator_list_state():
    stores = state.discover_stores(_app())
    now = 1_000_000
    kc = KeyContext(lambda: now)
    s = _store()
    counts = ValueState(s, kc, ValueStateDescriptor("value", serdes.INT64))
    for k, n in (("a", 3), ("b", 1), ("gone", 2)):
        kc.key_bytes = k.encode()
        counts.update(n)
    counts.clear()  # "gone" is a tombstone
    got = state.decode(stores["counts-value"], _entries(s), now)
    assert [(e.key, e.value) for e in got] == [("a", 3), ("b", 1)]
    assert got[0].to_json() == {"key": "a", "value": 3, "partition": 0}

    s = _store()
    seen = ListState(s, kc, stores["rem-seen"].descriptor)  # type: ignore[arg-type]
    kc.key_bytes = b"a"
    seen.add("x")
    seen.add("y")
    assert [(e.key, e.value) for e in state.decode(stores["rem-seen"], _entries(s), now)] == [("a", ["x", "y"])]

    s = _store()
    per = MapState(s, kc, stores["rem-per"].descriptor)  # type: ignore[arg-type]
    for k, item, n in (("a", "x", 2), ("a", "y", 1), ("b", "x", 5)):
        kc.key_bytes = k.encode()
        per.put(item, n)
    got = state.decode(stores["rem-per"], _entries(s), now)
    assert [(e.key, e.value) for e in got] == [("a", {"x": 2, "y": 1}), ("b", {"x": 5})]

    s = _store()
    last = ValueState(s, kc, stores["rem-last"].descriptor)  # type: ignore[arg-type]
    kc.key_bytes = b"a"
    last.update({"v": 1})
    [e] = state.decode(stores["rem-last"], _entries(s), now)
    assert (e.value, e.extra["expires"]) == ({"v": 1}, now + 60_000)
    assert state.decode(stores["rem-last"], _entries(s), now + 60_000) == []  # expired: as the state says

    s = _store()
    ops = ListState(s, KeyContext(lambda: now), stores["rem-ops"].descriptor)  # type: ignore[arg-type]
    ops.add(7)
    [e] = state.decode(stores["rem-ops"], {k: (3, v) for k, (_, v) in _entries(s).items()}, now)
    assert (e.key, e.value, e.partition) == (None, [7], 3)


def test_decodes_windows_and_timers():
    stores = state.discover_stores(_app())
    win = stores["win-windows"]
    fn = win.window_fn
    entries = {window_key(key_prefix(b"a"), 0, 1000): (1, struct.pack(">q", 3) + fn.serialize(3)),
               window_key(key_prefix(b"a"), 1000, 2000): (1, struct.pack(">q", 0))}  # purged contents
    got = state.decode(win, entries)
    assert [(e.key, e.value, e.extra) for e in got] == [
        ("a", 3, {"window_start": 0, "window_end": 1000}), ("a", None, {"window_start": 1000, "window_end": 2000})]
    timers = {b"e" + TIMESTAMP.pack(999 + BIAS) + b"a": (0, b""), b"p" + TIMESTAMP.pack(-5 + BIAS) + b"b": (0, b"")}
    got = state.decode(stores["win-timers"], timers)
    assert sorted((e.key, e.value["domain"], e.value["timestamp"]) for e in got) == [
        ("a", "event", 999), ("b", "processing", -5)]
    assert state.store_key_matches(stores["win-timers"], next(iter(timers)), b"a")


def test_aggregating_state_shows_the_result_and_undecodable_kinds_say_so():
    class Avg:
        def create_accumulator(self):  # type: ignore[no-untyped-def]
            return [0, 0]

        def add(self, v, acc):  # type: ignore[no-untyped-def]
            return [acc[0] + v, acc[1] + 1]

        def get_result(self, acc):  # type: ignore[no-untyped-def]
            return acc[0] / acc[1]

        def merge(self, a, b):  # type: ignore[no-untyped-def]
            return [a[0] + b[0], a[1] + b[1]]

    desc = AggregatingStateDescriptor("avg", Avg())
    info = state.StoreInfo("op-avg", "aggregating", "op", "c", serdes.STR, desc)
    entries = {key_prefix(b"k"): (0, serdes.JSON.serialize([6, 3]))}
    assert [(e.key, e.value) for e in state.decode(info, entries)] == [("k", 2.0)]
    with pytest.raises(InspectionError, match="--raw"):
        state.decode(state.StoreInfo("j-buffers", "join-buffer", "j", "c"), {})


def test_keys_are_parsed_with_the_store_key_serde():
    assert state.parse_key("héllo", serdes.STR) == "héllo".encode()
    assert state.parse_key("42", serdes.INT64) == struct.pack(">q", 42)
    assert state.parse_key('{"id": 7}', serdes.JSON) == b'{"id":7}'
    assert state.parse_key("7", serdes.JSON) == b"7"
    assert state.parse_key("word", serdes.JSON) == b'"word"'  # not JSON: a JSON string
    assert state.parse_key("00ff", serdes.STR, is_hex=True) == b"\x00\xff"
    with pytest.raises(InspectionError):
        state.parse_key("x", serdes.INT64)


def test_jsonable_values():
    from pydantic import BaseModel

    class M(BaseModel):
        a: int

    assert jsonable({"m": M(a=1), "b": b"\xff", "t": (1, 2), 3: "x"}) == {"m": {"a": 1}, "b": "base64:/w==",
                                                                         "t": [1, 2], "3": "x"}


# --- reset -----------------------------------------------------------------------------------------

def test_reset_topic_sets():
    app = _app()
    assert reset.input_topics(app) == ["in", "tools-unit-source-gen"]  # a custom source's topic is input data
    internal = reset.internal_topics(app)
    assert internal == sorted(["tools-unit-w-repartition", "tools-unit-counts-value-changelog",
                               "tools-unit-rem-seen-changelog", "tools-unit-rem-per-changelog",
                               "tools-unit-rem-last-changelog", "tools-unit-rem-ops-changelog",
                               "tools-unit-rem-timers-changelog", "tools-unit-win-windows-changelog",
                               "tools-unit-win-timers-changelog",
                               "tools-unit-topology", "tools-unit-query-metadata"])
    assert reset.internal_topics(app, include_dlq=True) == sorted(internal + ["tools-unit-dlq"])
    assert topics.app_topics(app) == {"sources": ["in"], "sinks": ["out"], "broadcasts": []}


def test_reset_plan_text_and_json():
    p = reset.ResetPlan("app", "app", reset.Position("timestamp", 5000), ["in"], {("in", 1): 3, ("in", 0): 2},
                        ["app-c-value-changelog"], [], "/state/app", True, ["gone"])
    text = p.to_text()
    assert "offset  in[0] -> 2" in text and text.index("in[0]") < text.index("in[1]")
    assert "delete  topic app-c-value-changelog" in text and "wipe    /state/app" in text and "gone" in text
    j = p.to_json()
    assert j["offsets"] == [{"topic": "in", "partition": 0, "offset": 2}, {"topic": "in", "partition": 1, "offset": 3}]
    assert j["reset_to"] == "first offset at or after timestamp 5000 ms" and j["wipe_state_dir"]


def test_discovers_the_stores_of_joins_count_windows_broadcast_and_sinks(tmp_path):
    from kstreamlet import KeyedBroadcastProcessFunction
    from kstreamlet.sinks import FileSink

    class Rules(KeyedBroadcastProcessFunction):
        def open(self, ctx):  # type: ignore[no-untyped-def]
            self.count = ctx.get_state(ValueStateDescriptor("count", serdes.INT64, default=0))

        def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
            pass

        def process_broadcast_element(self, value, ctx):  # type: ignore[no-untyped-def]
            pass

    app = App(application_id="ops")
    a = app.stream("a", value_serde=serdes.JSON)
    b = app.stream("b", value_serde=serdes.JSON)
    a.join(b).where(lambda v: v["k"], key_serde=serdes.STR).equal_to(lambda v: v["k"]).window(
        TumblingEventTimeWindows.of(10)).apply(lambda x, y: [x, y], name="wj").to("out")
    a.key_by(lambda v: v["k"], key_serde=serdes.STR, name="ak").interval_join(
        b.key_by(lambda v: v["k"], key_serde=serdes.STR, name="bk")).between(-2, 1).apply(lambda x, y: 1, name="ij").to("out")
    c = app.stream("c", key_serde=serdes.STR, value_serde=serdes.STR)
    c.keyed().count_window(3, name="cw").to("out")
    c.keyed().connect(app.broadcast("rules", value_serde=serdes.JSON)).process(Rules(), name="rules").to("out")
    c.sink(FileSink(str(tmp_path)), name="files")
    stores = state.discover_stores(app)
    kinds = {n: s.kind for n, s in stores.items()}
    assert kinds["wj-windows"] == "window" and kinds["wj-timers"] == "timers"
    assert kinds["ij-buffers"] == "join-buffer" and not stores["ij-buffers"].decodable
    assert kinds["cw-elements"] == "list" and kinds["cw-seen"] == "value"
    assert kinds["rules-count"] == "value" and stores["rules-count"].key_serde is serdes.STR
    assert kinds["files-2pc"] == "sink" and not stores["files-2pc"].decodable


def test_bootstrap_flag_beats_the_environment_for_commands_without_an_app(monkeypatch):
    """The precedence rule (flags > env > code): a tool's --bootstrap-servers is a flag."""
    from kstreamlet.tools.common import tool_settings

    monkeypatch.setenv("KSTREAMLET_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    s = tool_settings("127.0.0.1:9999")
    assert s.bootstrap_servers == "127.0.0.1:9999" and s.sources["bootstrap_servers"] == "flag --bootstrap-servers"
    assert tool_settings().bootstrap_servers == "127.0.0.1:1"

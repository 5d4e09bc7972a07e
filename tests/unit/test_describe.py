"""`app.describe()` / `kstreamlet describe`: Kafka Streams' Topology#describe() layout, stores
found by opening functions on a recording context, internal topics, Mermaid and JSON. Broker-free."""

from __future__ import annotations

import json
import re

import pytest

from kstreamlet import App, KeyedProcessFunction, TumblingEventTimeWindows, WatermarkStrategy, serdes
from kstreamlet.api.functions import BroadcastProcessFunction
from kstreamlet.state.keyed import ValueStateDescriptor


def wordcount() -> App:
    app = App(application_id="wc", bootstrap_servers="127.0.0.1:1")
    (app.stream("lines", value_serde=serdes.STR)
        .flat_map(str.split, name="split")
        .key_by(lambda w: w, key_serde=serdes.STR, name="words")
        .count(name="counts")
        .to("word-counts", value_serde=serdes.INT64))
    return app


def test_text_is_kafka_streams_topology_description_layout():
    app = wordcount()
    assert app.describe() == """\
Topologies:
   Sub-topology: 0
    Source: source-{a} (topics: [lines])
      --> split
    Processor: split (stores: [])
      --> key_by-wc-words-repartition
      <-- source-{a}
    Sink: key_by-wc-words-repartition (topic: wc-words-repartition)
      <-- split

   Sub-topology: 1
    Source: source-{b} (topics: [wc-words-repartition])
      --> counts
    Processor: counts (stores: [counts-value])
      --> sink-{c}
      <-- source-{b}
    Sink: sink-{c} (topic: word-counts)
      <-- counts

   Internal topics:
    wc-words-repartition (repartition)
    wc-counts-value-changelog (changelog of store counts-value, cleanup.policy=compact)

   Dead-letter topic: wc-dlq
""".format(**_ids(app))


def _ids(app: App) -> dict[str, str]:
    """Unnamed nodes are numbered globally; read the numbers from the built topology."""
    topo = app.topology()
    src0 = topo.subtopologies[0].nodes[0].name.split("-")[1]
    src1 = topo.subtopologies[1].nodes[0].name.split("-")[1]
    sink = topo.subtopologies[1].sinks[0].name.split("-")[1]
    return {"a": src0, "b": src1, "c": sink}


class Deduplicate(KeyedProcessFunction):
    def open(self, ctx):
        self.seen = ctx.get_state(ValueStateDescriptor("seen"))

    def process_element(self, value, ctx):
        ctx.timers.register_event_time(ctx.timestamp + 1000)
        ctx.emit(value)

    def on_timer(self, ts, ctx):
        pass


class Broken(KeyedProcessFunction):
    def open(self, ctx):
        raise RuntimeError("needs a database")

    def process_element(self, value, ctx):
        ctx.emit(value)


class Enrich(BroadcastProcessFunction):
    def process_element(self, value, ctx):
        ctx.emit(value)

    def process_broadcast_element(self, value, ctx):
        pass


def rich_app() -> App:
    app = App(application_id="rich", bootstrap_servers="127.0.0.1:1", error_policy="skip")
    wm = WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_assigner(lambda v: v["ts"])
    readings = app.stream("readings", value_serde=serdes.JSON, watermarks=wm)
    keyed = readings.key_by(lambda r: r["id"], key_serde=serdes.STR, name="by-id")
    keyed.process(Deduplicate(), name="dedup").to("unique")
    keyed.window(TumblingEventTimeWindows.of(5000)).max("t", name="max-t").to("max-t")
    keyed.process(Broken(), name="broken").to("never")

    def ticks():
        yield {"ts": 1}

    rules = app.broadcast("rules", value_serde=serdes.JSON)
    app.source(ticks, name="ticks").connect(rules).process(Enrich(), name="enrich").to("enriched")
    return app


def test_stores_timers_windows_and_what_cannot_be_known():
    text = rich_app().describe()
    assert "Processor: dedup (stores: [dedup-seen, dedup-timers])" in text, text
    assert re.search(r"Processor: max-t \(stores: \[max-t-\w+", text), text
    assert "Processor: broken (stores: [?])" in text, "an open() that fails is shown as unknown, not fatal"
    assert "Processor: enrich (stores: []) (broadcast: rules)" in text, text


def test_internal_topics_broadcasts_custom_sources_and_no_dlq_under_skip():
    info = rich_app().describe("json")
    kinds = {t["name"]: t["kind"] for t in info["internal_topics"]}
    assert kinds["rich-by-id-repartition"] == "repartition"
    assert kinds["rich-source-ticks"] == "source"
    assert kinds["rich-dedup-seen-changelog"] == kinds["rich-dedup-timers-changelog"] == "changelog"
    assert info["broadcasts"] == [{"topic": "rules", "key_serde": "bytes", "value_serde": "json", "processors": ["enrich"]}]
    assert info["custom_sources"] == [{"name": "ticks", "topic": "rich-source-ticks", "source": "ticks"}]
    assert info["dlq_topic"] is None, "error_policy=skip writes no dead-letter topic"
    text = rich_app().describe()
    assert "   Broadcast inputs (every member reads all of each):\n    rules --> enrich" in text
    assert "   Custom sources:\n    ticks (ticks) --> rich-source-ticks" in text
    assert "Dead-letter topic" not in text


def test_json_is_consistent_and_serializable():
    info = wordcount().describe("json")
    json.dumps(info)
    nodes = {n["name"]: n for st in info["subtopologies"] for n in st["nodes"]}
    for n in nodes.values():
        for s in n["successors"]:
            assert n["name"] in nodes[s]["predecessors"]
    sink = next(n for n in nodes.values() if n["role"] == "sink" and n["topics"] == ["word-counts"])
    assert (sink["key_serde"], sink["value_serde"]) == ("str", "int64")
    assert [st["id"] for st in info["subtopologies"]] == [0, 1]


def test_mermaid_has_a_subgraph_per_subtopology_topics_and_stores():
    m = wordcount().describe("mermaid")
    lines = m.splitlines()
    assert lines[0] == "flowchart LR"
    assert sum(1 for ln in lines if ln.strip().startswith("subgraph ")) == 2
    assert sum(1 for ln in lines if ln.strip() == "end") == 2
    assert '  t_wc_words_repartition(["wc-words-repartition"])' in lines, "the repartition topic links both"
    assert '  s_counts_value[("counts-value")]' in lines
    assert "  n_counts --- s_counts_value" in lines
    for ln in lines:  # node ids are plain identifiers
        for ident in re.findall(r"\b([nts]_\S+?)(?=[\[\(\s]|$)", ln):
            assert re.fullmatch(r"[nts]_[A-Za-z0-9_]+", ident), ln


def test_describe_does_not_get_in_the_way_of_running():
    app = wordcount()
    app.describe()
    assert app.topology() is app.topology(), "built once, the same topology runs"
    with pytest.raises(ValueError, match="unknown format 'dot'"):
        app.describe("dot")

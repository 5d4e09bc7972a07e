"""state/codec.py byte layouts, the TopologyBuilder, and the complete built Topology."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kstreamlet
from kstreamlet import App, serdes
from kstreamlet.state import codec
from kstreamlet.topology.builder import CustomSourceSpec, TopologyBuilder

TS = st.integers(min_value=-(2**62), max_value=2**62)


@given(st.lists(st.binary(max_size=20), max_size=8))
def test_list_codec_round_trips(items):
    assert codec.decode_list(codec.encode_list(items)) == items


@given(st.binary(max_size=30), st.binary(max_size=10))
def test_key_prefix_is_read_back_and_keeps_keys_apart(key, rest):
    entry = codec.key_prefix(key) + rest
    assert codec.key_of(entry) == key
    assert not (codec.key_prefix(key + b"x") + rest).startswith(codec.key_prefix(key))


@given(TS, TS)
def test_biased_timestamps_sort_like_the_numbers(a, b):
    ea, eb = codec.encode_timestamp(a), codec.encode_timestamp(b)
    assert (ea < eb) == (a < b)
    assert codec.decode_timestamp(ea) == a
    assert codec.decode_timestamp(b"xy" + eb, 2) == b


@given(st.binary(max_size=10), TS, TS)
def test_window_key_round_trips_after_its_prefix(key, start, end):
    prefix = codec.key_prefix(key)
    assert codec.decode_window(codec.window_key(prefix, start, end), len(prefix)) == (start, end)


def test_list_codec_of_values_uses_the_serde():
    ser, de = codec.list_codec(serdes.JSON)
    assert de(ser([1, {"a": 2}, "x"])) == [1, {"a": 2}, "x"]


def test_builder_names_internal_topics_and_numbers_operators():
    b = TopologyBuilder("app")
    assert b.repartition_topic(None, None) == "app-key_by-0-repartition"
    assert b.repartition_topic("clicks", 4) == "app-clicks-repartition"
    assert b.internal_topics["app-clicks-repartition"].partitions == 4
    assert [b.next_op_id(), b.next_op_id()] == [0, 1]
    with pytest.raises(ValueError, match="used twice"):
        b.check_name("clicks")
    with pytest.raises(ValueError, match="letters, digits"):
        b.check_name("no spaces")


def test_built_topology_carries_broadcasts_and_custom_sources():
    app = App(application_id="enrich", bootstrap_servers="127.0.0.1:1")
    users = app.broadcast(source=lambda: iter(()), name="users")
    rules = app.broadcast("rules")
    gen = app.source(lambda: iter(()), name="ticks", partitions=2)
    gen.to("out")
    app.stream("events").to("out2")
    topo = app.topology()
    assert topo.broadcasts == {"enrich-broadcast-users": users, "rules": rules}
    assert [(s.name, s.topic) for s in topo.custom_sources] == [
        ("users", "enrich-broadcast-users"), ("ticks", "enrich-source-ticks")]
    assert all(isinstance(s, CustomSourceSpec) for s in topo.custom_sources)
    assert topo.internal_topics["enrich-broadcast-users"].config == {"cleanup.policy": "compact"}
    assert topo.internal_topics["enrich-source-ticks"].partitions == 2
    # The same objects the builder kept: the runtime reads them from the topology, never the App.
    assert topo.broadcasts is app.builder.broadcasts and topo.custom_sources is app.builder.custom_sources
    with pytest.raises(RuntimeError, match="already built"):
        app.stream("late")


def test_configure_renames_internal_topics_defined_afterwards():
    app = App(application_id="a", bootstrap_servers="127.0.0.1:1")
    app.configure(application_id="b")
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: v, name="k").to("out")
    assert "b-k-repartition" in app.topology().internal_topics


def test_public_surface_is_importable_from_the_top_level():
    for name in kstreamlet.__all__:
        assert getattr(kstreamlet, name) is not None, name


def test_one_set_of_running_aggregations_for_keyed_and_windowed_streams():
    from kstreamlet.operators.aggregate import Count, Max, Min, Sum, extractor

    get = extractor("v")
    folds = {"count": Count(), "sum": Sum(get), "min": Min(get), "max": Max(get)}
    results = {}
    for name, agg in folds.items():
        acc = agg.create_accumulator()
        for v in (3, 1, 2):
            acc = agg.add({"v": v}, acc)
        results[name] = agg.get_result(acc)
    assert results == {"count": 3, "sum": 6, "min": 1, "max": 3}
    # Session windows merge accumulators; an empty side (None) keeps the other.
    assert Min(get).merge(None, 2) == 2 and Max(get).merge(4, None) == 4 and Sum(get).merge(1, 2) == 3
    assert Count().merge(2, 3) == 5


@given(st.binary(max_size=10), TS, TS)
def test_the_window_operator_lays_out_windows_as_the_codec_does(key, start, end):
    from kstreamlet.operators.window import _decode_window, _win_key
    from kstreamlet.windowing import TimeWindow

    prefix = codec.key_prefix(key)
    k = _win_key(prefix, TimeWindow(start, end))
    assert k == codec.window_key(prefix, start, end)
    assert _decode_window(k, len(prefix)) == TimeWindow(start, end)

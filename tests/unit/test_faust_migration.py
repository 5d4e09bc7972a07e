"""The Faust migration path: faust.Record serdes (kstreamlet/serdes_faust.py) and the word count of
examples/faust-wordcount/app.py (docs/faust-migration.md), broker-free."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from kstreamlet import serdes
from kstreamlet.serdes_faust import faust_record
from kstreamlet.testing import TopologyTestDriver

faust = pytest.importorskip("faust")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "faust-wordcount" / "app.py"


class Order(faust.Record, serializer="json"):
    id: str
    amount: int


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("faust_wordcount_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_faust_record_serde_writes_and_reads_faust_bytes() -> None:
    s = faust_record(Order)
    data = s.serialize(Order(id="o", amount=3))
    assert data == Order(id="o", amount=3).dumps(), "the same bytes a Faust producer writes"
    assert json.loads(data)["__faust"]["ns"].endswith("Order")
    assert s.deserialize(data) == Order(id="o", amount=3)
    assert s.deserialize(b'{"id": "p", "amount": 1}') == Order(id="p", amount=1), "written without Faust metadata"
    assert s.deserialize(s.serialize({"id": "d", "amount": 2})) == Order(id="d", amount=2), "a dict via from_data"
    assert s.serialize(None) is None and s.deserialize(None) is None
    with pytest.raises(TypeError, match="faust.Record"):
        faust_record(dict)


def test_faust_wordcount_example_runs_on_the_driver() -> None:
    mod = _example()
    with TopologyTestDriver(mod.app, wall_clock_ms=0, partitions={"posts": 2}) as d:
        posts = d.input_topic("posts", value_serde=serdes.STR)
        posts.pipe_input("hello world", timestamp=1)
        posts.pipe_input("hello kstreamlet", timestamp=2)
        counts = d.output_topic("word-counts", key_serde=serdes.STR, value_serde=faust_record(mod.WordCount))
        got = {(r.key, r.value.word, r.value.count) for r in counts.read_records_to_list()}
        assert got == {("hello", "hello", 1), ("world", "world", 1), ("hello", "hello", 2),
                       ("kstreamlet", "kstreamlet", 1)}
        reports = d.output_topic("reports", key_serde=serdes.STR, value_serde=serdes.STR)
        assert reports.is_empty()
        d.advance_wall_clock_time(mod.REPORT_EVERY_MS)  # @app.timer(interval=60.0)
        assert sorted(reports.read_values_to_list()) == ["hello: 2", "kstreamlet: 1", "world: 1"]
        for p in (0, 1):  # the hour [0, 1h) closes when both input partitions are past it
            posts.pipe_input("next", timestamp=mod.HOUR_MS + 10, partition=p)
        hourly = d.output_topic("hourly-counts", key_serde=serdes.STR, value_serde=serdes.INT64)
        assert sorted(hourly.read_key_values_to_list()) == [("hello", 2), ("kstreamlet", 1), ("world", 1)]

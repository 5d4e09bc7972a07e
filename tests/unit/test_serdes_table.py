"""docs/serdes.md's table of default output serdes is what the DSL does: each row builds the
operator, writes it with a plain ``.to(topic)`` and reads the sink's serdes from describe()."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kstreamlet import App, KeyedProcessFunction, TumblingEventTimeWindows, serdes
from kstreamlet.api.functions import BroadcastProcessFunction, CoProcessFunction, KeyedCoProcessFunction

ROOT = Path(__file__).resolve().parents[2]
W = TumblingEventTimeWindows.of(1000)


class KPF(KeyedProcessFunction):
    def process_element(self, value, ctx):
        ctx.emit(value)


class BPF(BroadcastProcessFunction):
    def process_element(self, value, ctx):
        ctx.emit(value)

    def process_broadcast_element(self, value, ctx):
        pass


class CPF(CoProcessFunction):
    def process_element1(self, value, ctx):
        ctx.emit(value)

    def process_element2(self, value, ctx):
        ctx.emit(value)


class KCPF(KeyedCoProcessFunction):
    def process_element1(self, value, ctx):
        ctx.emit(value)

    def process_element2(self, value, ctx):
        ctx.emit(value)


def _src(app: App):  # an input with distinctive serdes: str keys, int64 values
    return app.stream("in", key_serde=serdes.STR, value_serde=serdes.INT64)


def _keyed(app: App):
    return _src(app).keyed()


def _other(app: App):
    return app.stream("in2", key_serde=serdes.STR, value_serde=serdes.INT64)


#: table row (the operator column of docs/serdes.md) -> how to build it
OPERATORS = {
    "app.stream(topic)": lambda app: app.stream("in"),
    "app.table(topic)": lambda app: app.table("in").source,
    "app.source(src, name)": lambda app: app.source(lambda: iter([1]), name="gen"),
    "map / filter / flat_map / peek / process(fn)": lambda app: _src(app).map(lambda v: v).process(lambda v, c: None),
    "branch / merge / side_output / keyed()": lambda app: _src(app).branch(lambda v: True)[0].merge(_other(app)),
    "key_by(fn)": lambda app: _src(app).key_by(lambda v: v),
    "keyed.process(KeyedProcessFunction)": lambda app: _keyed(app).process(KPF()),
    "keyed.reduce": lambda app: _keyed(app).reduce(lambda a, b: a),
    "keyed.aggregate": lambda app: _keyed(app).aggregate(lambda: 0, lambda v, acc: acc + v),
    "keyed.count()": lambda app: _keyed(app).count(),
    "keyed.sum / min / max": lambda app: _keyed(app).sum(),
    "window(w).reduce": lambda app: _keyed(app).window(W).reduce(lambda a, b: a),
    "window(w).aggregate / process / apply / sum / min / max": lambda app: _keyed(app).window(W).sum(),
    "window(w).count()": lambda app: _keyed(app).window(W).count(),
    "window(w).with_window()…": lambda app: _keyed(app).window(W).with_window().count(),
    "count_window(n)": lambda app: _keyed(app).count_window(2),
    "join / left_join / outer_join / co_group": lambda app: _src(app).join(_other(app)).where(lambda v: v)
        .equal_to(lambda v: v).window(W).apply(lambda a, b: a),
    "interval_join": lambda app: _keyed(app).interval_join(_other(app).keyed()).between(-1, 1).apply(lambda a, b: a),
    "join_table": lambda app: _keyed(app).join_table(app.table("t", key_serde=serdes.STR), lambda a, b: a),
    "connect(stream).process": lambda app: _src(app).connect(_other(app)).process(CPF()),
    "keyed.connect(keyed).process": lambda app: _keyed(app).connect(_other(app).keyed()).process(KCPF()),
    "connect(broadcast).process": lambda app: _src(app).connect(app.broadcast("b")).process(BPF()),
}


def _doc_rows() -> dict[str, tuple[str, str]]:
    text = (ROOT / "docs" / "serdes.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \|", text, re.M):
        rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def _written(build) -> tuple[str, str]:
    app = App(application_id="serdes", bootstrap_servers="127.0.0.1:1")
    build(app).to("out")
    info = app.describe("json")
    sink = next(n for st in info["subtopologies"] for n in st["nodes"] if n["role"] == "sink" and n["topics"] == ["out"])
    return sink["key_serde"], sink["value_serde"]


def _meaning(cell: str, side: str) -> str:
    """A table cell as the serde name the probe must see: ``same as input`` is the probe input's
    (str keys, int64 values); ``… (default BYTES)`` the default; else the first word (``**JSON**``)."""
    if "same as input" in cell:
        return {"key": "str", "value": "int64"}[side]
    m = re.search(r"default (\w+)", cell)
    word = m.group(1) if m else cell.split()[0]
    return word.strip("*`").lower()


def test_every_documented_row_is_probed():
    assert set(_doc_rows()) == set(OPERATORS)


@pytest.mark.parametrize("operator", list(OPERATORS))
def test_documented_default_output_serdes_match_the_dsl(operator):
    key_cell, value_cell = _doc_rows()[operator]
    assert _written(OPERATORS[operator]) == (_meaning(key_cell, "key"), _meaning(value_cell, "value")), operator

"""Store layouts (issue 18): window co-group contents appended per element in a tagged layout, old
contents still read (a restore of an older changelog), the layout recorded with the topology and a
downgrade detected."""

from __future__ import annotations

from kstreamlet import serdes
from kstreamlet.operators.joins import COGROUP_LAYOUT, LEFT, RIGHT, _pair_codec
from kstreamlet.state.codec import encode_list
from kstreamlet.testing import TopologyTestDriver
from kstreamlet.topology.record import compare, topology_record
from tests.unit.test_cogroup import co_group_app, fmt


def _old_layout(lefts: list, rights: list) -> bytes:
    """Co-group contents as written before issue 18 (layout 0)."""
    return encode_list([encode_list([serdes.JSON.serialize(v) for v in lefts]),
                        encode_list([serdes.JSON.serialize(v) for v in rights])])


def test_co_group_contents_append_without_decoding_and_read_the_old_layout() -> None:
    ser, de, append = _pair_codec(serdes.JSON, serdes.JSON)
    raw = ser([[], []])
    for side, v in [(LEFT, 1), (RIGHT, "x"), (LEFT, 2)]:
        raw = append(raw, (side, v))
    assert de(raw) == [[1, 2], ["x"]]
    assert de(ser([[1, 2], ["x"]])) == [[1, 2], ["x"]]
    old = _old_layout([1], ["x", "y"])
    assert de(old) == [[1], ["x", "y"]]
    assert de(append(old, (RIGHT, "z"))) == [[1], ["x", "y", "z"]]  # converted, then appended
    assert de(_old_layout([], [])) == [[], []]


def test_a_window_of_the_old_layout_restored_from_the_changelog_fires_with_new_elements() -> None:
    app = co_group_app(lambda b: b.apply(fmt))
    with TopologyTestDriver(app, partitions={"first": 2, "second": 2}) as d:
        f, s = d.input_topic("first", value_serde=serdes.JSON), d.input_topic("second", value_serde=serdes.JSON)
        out = d.output_topic("out", key_serde=serdes.STR, value_serde=serdes.JSON)
        f.pipe_input(["a", 0], partition=0)  # creates window [0, 3) of key "a" (and its timer)
        s.pipe_input(["a", 1], partition=0)
        # Rewrite its contents in the old layout, as a store restored from an older changelog holds them.
        ((k, raw), store), = [(entry, st) for (name, _), st in d.stores.items() if name.endswith("-windows")
                              for entry in st.backend.iter_from(b"")]
        store.backend.write({k: raw[:8] + _old_layout([["a", 0]], [["a", 1]])}, None)
        d.restart()
        f.pipe_input(["a", 2], partition=0)
        for p in (0, 1):
            f.pipe_input(["z", 100], partition=p)
            s.pipe_input(["z", 100], partition=p)
        got = [(r.key, r.value) for r in out.read_records_to_list() if r.key == "a"]
    assert got == [("a", "F:(a,0)(a,2) S:(a,1)")]


def test_the_layout_is_recorded_and_a_downgrade_is_a_change() -> None:
    app = co_group_app(lambda b: b.apply(fmt))
    current, _ = topology_record(app.topology(), app.settings)
    windows = [r for r in current.values() if r.name.endswith("-windows")]
    assert windows and all(r.layout == COGROUP_LAYOUT for r in windows)
    assert all(r.layout == 0 for r in current.values() if not r.name.endswith("-windows"))
    # An upgrade (recorded with layout 0, i.e. no field) reads the old layout: no change.
    older = {k: type(r).from_json({kk: vv for kk, vv in r.to_json().items() if kk != "layout"})
             for k, r in current.items()}
    assert compare(older, current) == []
    # A downgrade (recorded newer than this code writes) would misread the entries.
    plain_current = {k: type(r).from_json({**r.to_json(), "layout": 0}) for k, r in current.items()}
    changes = compare(current, plain_current)
    assert {c.kind for c in changes} == {"layout"} and all("downgrade" in c.message for c in changes)

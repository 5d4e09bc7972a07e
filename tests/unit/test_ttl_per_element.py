"""State TTL on list and map state is per element / per entry (Flink's TtlListState, TtlMapState)."""

from __future__ import annotations

from kstreamlet import App, KeyedProcessFunction, serdes
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.codec import MAX_TIMESTAMP, encode_list, key_prefix
from kstreamlet.state.keyed import (
    KeyContext,
    ListState,
    ListStateDescriptor,
    MapStateDescriptor,
    StateTtlConfig,
    _EXP,
)
from kstreamlet.state.store import Store
from kstreamlet.testing import TopologyTestDriver


class ListTtl(KeyedProcessFunction):
    """``"+x"`` adds x, ``"=x,y"`` updates the list to [x, y], ``"?"`` reads it (emits the list)."""

    def __init__(self, update_on_read: bool = False) -> None:
        self.update_on_read = update_on_read

    def open(self, ctx):
        self.items = ctx.get_list_state(ListStateDescriptor(
            "items", serdes.STR, ttl=StateTtlConfig(10, update_on_read=self.update_on_read)))

    def process_element(self, value, ctx):
        if value.startswith("+"):
            self.items.add(value[1:])
        elif value.startswith("="):
            self.items.update(value[1:].split(","))
        else:
            ctx.emit(self.items.get())


class MapTtl(KeyedProcessFunction):
    """``"a=1"`` puts a→1, ``"?"`` emits the items, ``"?a"`` emits get(a)."""

    def __init__(self, update_on_read: bool = False) -> None:
        self.update_on_read = update_on_read

    def open(self, ctx):
        self.m = ctx.get_map_state(MapStateDescriptor(
            "m", serdes.STR, serdes.INT64, ttl=StateTtlConfig(10, update_on_read=self.update_on_read)))

    def process_element(self, value, ctx):
        if "=" in value:
            k, v = value.split("=")
            self.m.put(k, int(v))
        elif value == "?":
            ctx.emit(dict(self.m.items()))
        else:
            ctx.emit({value[1:]: self.m.get(value[1:])})


def drive(fn, steps):
    """``steps``: (ms to advance the wall clock first, input value); returns the outputs."""
    app = App(application_id="ttl", bootstrap_servers="127.0.0.1:1")
    app.stream("in", value_serde=serdes.STR).key_by(lambda v: "k", key_serde=serdes.STR).process(fn).to(
        "out", value_serde=serdes.JSON)
    with TopologyTestDriver(app, wall_clock_ms=0) as d:
        inp = d.input_topic("in", value_serde=serdes.STR)
        for advance, v in steps:
            if advance:
                d.advance_wall_clock_time(advance)
            inp.pipe_input(v)
        return d.output_topic("out", value_serde=serdes.JSON).read_values_to_list()


def test_list_state_ttl_is_per_element():
    # a written at 0 s (expires 10 s), b at 6 s (expires 16 s): at 11 s only b is left.
    out = drive(ListTtl(), [(0, "+a"), (6_000, "+b"), (3_000, "?"), (2_000, "?"), (5_000, "?")])
    assert out == [["a", "b"], ["b"], []]


def test_list_state_add_is_not_a_read_under_update_on_read():
    # OnReadAndWrite: add stamps only the added element (Flink's TtlListState.add does not read).
    out = drive(ListTtl(update_on_read=True), [(0, "+a"), (6_000, "+b"), (5_000, "?")])
    assert out == [["b"]]


def test_list_state_read_refreshes_the_elements_read_under_update_on_read():
    # read at 9 s refreshes a and b to 19 s; c added at 12 s expires at 22 s.
    out = drive(ListTtl(update_on_read=True),
                [(0, "+a"), (6_000, "+b"), (3_000, "?"), (3_000, "+c"), (6_000, "?"), (6_000, "?")])
    assert out == [["a", "b"], ["a", "b", "c"], ["a", "b", "c"]]
    out = drive(ListTtl(update_on_read=True), [(0, "+a"), (9_000, "?"), (12_000, "?")])
    assert out == [["a"], []]


def test_list_state_update_stamps_every_element_it_writes():
    out = drive(ListTtl(), [(0, "+a"), (6_000, "=x,y"), (5_000, "?"), (1_000, "+z"), (5_000, "?")])
    assert out == [["x", "y"], ["z"]]


def test_map_state_ttl_is_per_entry():
    # a at 0 s, b at 6 s: at 11 s only b.
    assert drive(MapTtl(), [(0, "a=1"), (6_000, "b=2"), (5_000, "?")]) == [{"b": 2}]
    # OnReadAndWrite: iterating the entries at 9 s refreshes both (to 19 s).
    out = drive(MapTtl(update_on_read=True), [(0, "a=1"), (6_000, "b=2"), (3_000, "?"), (6_000, "?")])
    assert out == [{"a": 1, "b": 2}, {"a": 1, "b": 2}]
    # get(a) refreshes a only.
    out = drive(MapTtl(update_on_read=True), [(0, "a=1"), (1_000, "b=2"), (8_000, "?a"), (5_000, "?")])
    assert out == [{"a": 1}, {"a": 1}]


def _list_state(clock, ttl_s=10.0):
    store = Store("s", 0, MemoryBackend(), None, None)
    keyctx = KeyContext(clock)
    keyctx.key_bytes = b"k"
    return store, ListState(store, keyctx, ListStateDescriptor("items", serdes.STR, ttl=StateTtlConfig(ttl_s)))


def test_a_list_stored_with_one_expiry_for_the_list_still_loads():
    now = [1_000]
    store, state = _list_state(lambda: now[0])
    key = key_prefix(b"k")
    store.put(key, _EXP.pack(5_000) + encode_list([b"a", b"b"]))  # the layout before per-element TTL
    assert state.get() == ["a", "b"]
    assert store.get(key) == _EXP.pack(5_000) + encode_list([b"a", b"b"]), "a plain read does not rewrite"
    now[0] = 2_000
    state.add("c")  # converted: a and b keep 5 s, c expires at 12 s
    assert state.get() == ["a", "b", "c"]
    now[0] = 5_000
    assert state.get() == ["c"]
    now[0] = 12_000
    assert state.get() == []
    assert store.get(key) is None, "a list whose elements all expired is deleted"
    store.put(key, _EXP.pack(5_000) + encode_list([b"a"]))
    assert state.get() == [], "an old list past its expiry is empty"


def test_union_list_state_reads_the_ttl_layout():
    now = [0]
    store, state = _list_state(lambda: now[0])
    state.add("a")
    now[0] = 6_000
    state.add("b")
    raw = store.get(key_prefix(b"k"))
    now[0] = 11_000
    assert state.decode_stored(raw) == ["b"]


def test_no_ttl_list_layout_is_unchanged():
    store = Store("s", 0, MemoryBackend(), None, None)
    keyctx = KeyContext(lambda: 0)
    state = ListState(store, keyctx, ListStateDescriptor("items", serdes.STR))
    state.add("a")
    state.add_all(["b", "c"])
    assert store.get(key_prefix(b"")) == encode_list([b"a", b"b", b"c"])
    state.update([])
    assert store.get(key_prefix(b"")) is None


def test_huge_ttl_saturates_and_never_expires():
    for ttl_s in (2**63 / 1000, float("inf"), 2**70):
        now = [1_700_000_000_000]
        store, state = _list_state(lambda: now[0], ttl_s)
        state.add("a")
        now[0] = MAX_TIMESTAMP - 1
        assert state.get() == ["a"]

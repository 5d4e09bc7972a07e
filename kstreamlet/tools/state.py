"""``kstreamlet state stores | get | scan module:app``: a store's committed contents, decoded.

A store's contents are read from its changelog ``<application_id>-<store>-changelog`` (so this
works from any machine, while the app runs or not), with ``isolation.level=read_committed``:
the latest committed value per key, tombstones removed — exactly what a restoring task would
load. Keys and values are decoded with the store's serdes, which are learnt from the app itself:
each keyed operator's function is copied and opened (``open()``) against a recording context that
notes the state it declares (as the runtime does for a task), so ``open()`` must not need more
than declaring state.

Store kinds and how they are decoded (layouts: :mod:`kstreamlet.state.codec`, :mod:`kstreamlet.state.keyed`):

- ``value`` / ``reducing`` (also ``count``/``sum``/``min``/``max``/``reduce``/``aggregate``, whose
  store is ``<operator>-value``), ``aggregating`` (shown as ``get_result(accumulator)``), ``list``,
  ``map`` (the entries of a key), with TTL (expired entries are left out, as the state never
  returns them);
- ``operator-list`` (operator and union list state: one list per partition);
- ``window`` (``<operator>-windows`` of time windows: key, window start/end, the window's
  accumulator or element list; ``null`` after a purging trigger);
- ``timers`` (``<operator>-timers``: key, time domain and timestamp of each pending timer);
- not decodable, shown with ``--raw`` only: ``join-buffer`` (interval join buffers), ``sink``
  (two-phase-commit sink committables) and ``raw`` (other operators' own layouts).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from kstreamlet import serdes as _serdes
from kstreamlet.api.context import RuntimeContext
from kstreamlet.config import Settings
from kstreamlet.serdes import Serde
from kstreamlet.state.backend import MemoryBackend
from kstreamlet.state.codec import MIN_TIMESTAMP, TIMESTAMP, BIAS, decode_window, key_of, key_prefix
from kstreamlet.state.factory import changelog_topic
from kstreamlet.state.keyed import (
    AggregatingStateDescriptor,
    KeyContext,
    ListState,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from kstreamlet.state.store import Store
from kstreamlet.tools.common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    ToolError,
    add_connection_args,
    add_json_arg,
    admin_client,
    client_config,
    command,
    dumps,
    jsonable,
    load_tool_app,
    show,
    subparser,
)

DECODABLE = ("value", "reducing", "aggregating", "list", "map", "operator-list", "window", "timers")


@dataclass
class StoreInfo:
    """A store of the app: its name, kind, the operator (node) declaring it, and how to decode it."""

    name: str
    kind: str
    operator: str
    changelog: str
    key_serde: Serde[Any] | None = None
    descriptor: StateDescriptor | None = None
    #: For ``window``: the operator's WindowFunction (its ``deserialize`` reads a window's contents).
    window_fn: Any = None
    #: ``operator-list``: union list state.
    union: bool = False

    @property
    def decodable(self) -> bool:
        return self.kind in DECODABLE

    def to_json(self) -> dict[str, Any]:
        d = self.descriptor
        serde = None
        if isinstance(d, (ValueStateDescriptor, ListStateDescriptor, ReducingStateDescriptor)):
            serde = d.serde.name
        elif isinstance(d, MapStateDescriptor):
            serde = f"{d.key_serde.name} -> {d.value_serde.name}"
        elif isinstance(d, AggregatingStateDescriptor):
            serde = d.accumulator_serde.name
        return {"store": self.name, "kind": self.kind, "operator": self.operator, "changelog": self.changelog,
                "key_serde": self.key_serde.name if self.key_serde is not None else None, "value_serde": serde,
                "ttl": d.ttl is not None if d is not None else False, "decodable": self.decodable}


class _Task:
    """Just enough of a task for ``open()`` to declare state against (nothing is processed)."""

    id = "0_0"
    partition = 0
    msg = None
    watermark = MIN_TIMESTAMP

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = lambda: int(time.time() * 1000)
        self.keyctx = KeyContext(self.clock)
        self.operator_keyctx = KeyContext(self.clock)

    def store(self, name: str) -> Store:
        return Store(name, 0, MemoryBackend(), None, None)

    def read_all_partitions(self, store: Store) -> dict[int, dict[bytes, bytes]]:
        return {}

    def partitions_of(self, topic: str) -> int:
        return 1


class _Recorder(RuntimeContext):
    """A RuntimeContext that notes every store the function declares (name -> (kind, descriptor))."""

    def __init__(self, task: Any, node: Any) -> None:
        super().__init__(task, node)
        self.declared: dict[str, tuple[str, StateDescriptor | None, bool]] = {}

    def _note(self, name: str, kind: str, desc: StateDescriptor | None, union: bool = False) -> None:
        if name not in self.declared or self.declared[name][0] == "raw":
            self.declared[name] = (kind, desc, union)

    def raw_store(self, name: str) -> Store:
        self._note(name, "raw", None)
        return super().raw_store(name)

    def state(self, desc: StateDescriptor) -> Any:
        kind = {ValueStateDescriptor: "value", ListStateDescriptor: "list", MapStateDescriptor: "map",
                ReducingStateDescriptor: "reducing", AggregatingStateDescriptor: "aggregating"}.get(type(desc))
        if kind is None:
            kind = next((k for c, k in ((ValueStateDescriptor, "value"), (ListStateDescriptor, "list"),
                                        (MapStateDescriptor, "map"), (ReducingStateDescriptor, "reducing"),
                                        (AggregatingStateDescriptor, "aggregating")) if isinstance(desc, c)), "raw")
        self._note(desc.name, kind, desc)
        return super().state(desc)

    def get_operator_list_state(self, desc: ListStateDescriptor) -> Any:
        self._note(desc.name, "operator-list", desc)
        return super().get_operator_list_state(desc)

    def get_union_list_state(self, desc: ListStateDescriptor) -> Any:
        self._note(desc.name, "operator-list", desc, union=True)
        return super().get_union_list_state(desc)


def discover_stores(app: Any) -> dict[str, StoreInfo]:
    """Every state store of the app's topology, by store name."""
    from kstreamlet.operators.joins import IntervalJoinOperator
    from kstreamlet.operators.window import WindowOperator
    from kstreamlet.sinks.twophase.operator import TwoPhaseCommitSinkNode
    from kstreamlet.topology.broadcast import BroadcastProcessNode
    from kstreamlet.topology.nodes import KeyedProcessNode

    settings = app.settings
    topology = app.topology()
    app_id = settings.application_id
    out: dict[str, StoreInfo] = {}

    def add(name: str, kind: str, node: Any, **kw: Any) -> None:
        out[name] = StoreInfo(name, kind, node.name, changelog_topic(app_id, name), **kw)

    for st in topology.subtopologies:
        for node in st.nodes:
            if isinstance(node, TwoPhaseCommitSinkNode):
                add(node.store_name, "sink", node)
                add(node.timer_store_name, "sink", node)
                continue
            if not isinstance(node, (KeyedProcessNode, BroadcastProcessNode)):
                continue
            key_serde = node.key_serde
            fn = copy.copy(node.fn)
            rec = _Recorder(_Task(settings), node)
            try:
                fn.open(rec)
            except Exception as e:
                raise ToolError(f"cannot learn the state of operator {node.name}: its open() failed outside a task "
                                f"({type(e).__name__}: {e})") from None
            finally:
                try:
                    fn.close()
                except Exception:
                    pass
            for state_name, (kind, desc, union) in rec.declared.items():
                name = node.store_name(state_name)
                window_fn = None
                if kind == "raw" and isinstance(fn, WindowOperator) and state_name == "windows":
                    kind, window_fn = "window", fn.fn
                elif kind == "raw" and isinstance(fn, IntervalJoinOperator):
                    kind = "join-buffer"
                add(name, kind, node, key_serde=key_serde, descriptor=desc, window_fn=window_fn, union=union)
            has_timers = getattr(node, "_has_timers", None)
            if isinstance(node, KeyedProcessNode) and callable(has_timers) and has_timers():
                add(node.store_name("timers"), "timers", node, key_serde=key_serde)
            elif isinstance(node, BroadcastProcessNode) and key_serde is not None:
                inner = KeyedProcessNode(node.fn, key_serde, node.name)
                if inner._has_timers():
                    add(node.store_name("timers"), "timers", node, key_serde=key_serde)
    return out


def find_store(stores: dict[str, StoreInfo], name: str) -> StoreInfo:
    """A store by name, or by the name of the operator when it has one decodable store (``counts``
    for ``counts-value``); ToolError (exit 1) listing the stores otherwise."""
    if name in stores:
        return stores[name]
    by_op = [s for s in stores.values() if s.operator == name and s.kind not in ("timers",)]
    if len(by_op) == 1:
        return by_op[0]
    known = ", ".join(sorted(stores)) or "none"
    hint = f" (operator {name} has stores {', '.join(s.name for s in by_op)})" if by_op else ""
    raise ToolError(f"no store {name!r} in the app{hint}; its stores: {known}", EXIT_NOT_FOUND)


# --- reading the changelog ----------------------------------------------------------------------------

def read_changelog(settings: Settings, topic: str, timeout: float = 60.0) -> dict[bytes, tuple[int, bytes]]:
    """Latest committed value per key of every partition of ``topic`` (``{key: (partition, value)}``),
    tombstones removed; read with ``read_committed`` up to the last stable offset as of the start."""
    c = Consumer({**client_config(settings), "group.id": f"kstreamlet-tools-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "isolation.level": "read_committed", "enable.partition.eof": True,
                  "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise ToolError(f"changelog {topic} does not exist (the store has no committed state yet, or the app "
                            "was reset)", EXIT_NOT_FOUND)
        parts = sorted(md.partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1] for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        out: dict[bytes, tuple[int, bytes]] = {}
        if not todo:
            return out
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise ToolError(f"could not read {topic} partitions {sorted(todo)} to their end in {timeout:g}s", 1)
            for m in c.consume(5000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(m.partition())
                        continue
                    raise ToolError(f"reading {topic}: {err.str()}", 1)
                k = m.key()
                if k is None:
                    continue
                part, offset, value = int(m.partition() or 0), int(m.offset() or 0), m.value()
                if value is None:
                    out.pop(k, None)
                else:
                    out[k] = (part, value)
                if offset + 1 >= ends[part]:
                    todo.discard(part)
            if todo:
                for pos in c.position([TopicPartition(topic, p) for p in todo]):
                    if pos.offset >= 0 and pos.offset >= ends[pos.partition]:
                        todo.discard(pos.partition)
        return out
    finally:
        c.close()


# --- decoding -------------------------------------------------------------------------------------------

@dataclass
class Entry:
    """One decoded entry: the key, its value, the changelog partition; windows and timers say more."""

    key: Any
    value: Any
    partition: int
    key_bytes: bytes
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": jsonable(self.key), "value": jsonable(self.value), "partition": self.partition,
                **{k: jsonable(v) for k, v in self.extra.items()}}

    def to_text(self) -> str:
        extra = "".join(f"  {k}={v}" for k, v in self.extra.items())
        return f"{show(self.key)}\t{show(self.value)}{extra}"


_EXP = 8


def _ttl_unwrap(desc: StateDescriptor | None, raw: bytes, now: int) -> tuple[bytes | None, int | None]:
    """``(payload or None when expired, expiry)`` of a value stored with TTL; ``(raw, None)`` without."""
    if desc is None or desc.ttl is None:
        return raw, None
    exp = int.from_bytes(raw[:_EXP], "big", signed=True)
    return (raw[_EXP:] if exp > now else None), exp


def decode(info: StoreInfo, entries: dict[bytes, tuple[int, bytes]], now: int | None = None) -> list[Entry]:
    """The decoded entries of a store, sorted by key bytes (ToolError for a kind that cannot be decoded)."""
    if not info.decodable:
        raise ToolError(f"store {info.name} ({info.kind}) has a layout kstreamlet state cannot decode; "
                        "use --raw to print its entries as bytes")
    now = int(time.time() * 1000) if now is None else now
    kde = (info.key_serde or _serdes.BYTES).deserialize
    desc = info.descriptor
    out: list[Entry] = []
    maps: dict[bytes, Entry] = {}
    for k, (part, raw) in sorted(entries.items()):
        if info.kind == "timers":
            kind, ts, kb = k[:1], TIMESTAMP.unpack_from(k, 1)[0] - BIAS, k[9:]
            out.append(Entry(kde(kb), {"domain": "event" if kind == b"e" else "processing", "timestamp": ts},
                             part, kb))
            continue
        kb = key_of(k)
        n = 4 + len(kb)
        if info.kind == "window":
            start, end = decode_window(k, n)
            contents = info.window_fn.deserialize(raw[8:]) if len(raw) > 8 else None
            out.append(Entry(kde(kb), contents, part, kb, {"window_start": start, "window_end": end}))
            continue
        if info.kind in ("list", "operator-list"):
            assert isinstance(desc, ListStateDescriptor)
            items: list[Any] = ListState(Store(info.name, 0, MemoryBackend(), None, None), KeyContext(lambda: now), desc
                              ).decode_stored(raw)
            if not items and desc.ttl is not None:
                continue  # every element expired
            key = None if info.kind == "operator-list" else kde(kb)
            out.append(Entry(key, items, part, kb))
            continue
        payload, exp = _ttl_unwrap(desc, raw, now)
        if payload is None:
            continue  # expired
        extra = {"expires": exp} if exp is not None else {}
        if info.kind == "map":
            assert isinstance(desc, MapStateDescriptor)
            user_key = desc.key_serde.deserialize(k[n:])
            e = maps.get(kb)
            if e is None:
                e = maps[kb] = Entry(kde(kb), {}, part, kb)
                out.append(e)
            e.value[user_key] = desc.value_serde.deserialize(payload)
            continue
        if isinstance(desc, AggregatingStateDescriptor):
            value = desc.aggregate_function.get_result(desc.accumulator_serde.deserialize(payload))
        else:
            assert isinstance(desc, (ValueStateDescriptor, ReducingStateDescriptor))
            value = desc.serde.deserialize(payload)
        out.append(Entry(kde(kb), value, part, kb, extra))
    return out


def parse_key(text: str, serde: Serde[Any] | None, is_hex: bool = False) -> bytes:
    """The serialized key for ``text`` as typed on the command line: hex of the key bytes with
    ``is_hex``; else by the store's key serde: ``str``/``bytes`` take the text as is, ``int64`` a
    number, ``json`` a JSON document (text that is not JSON is taken as a JSON string), a pydantic
    serde a JSON object; any other serde gets the text's UTF-8 bytes to deserialize."""
    if is_hex:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ToolError(f"--key-hex: {text!r} is not hex") from None
    s = serde or _serdes.BYTES
    try:
        if s.name in ("str", "bytes"):
            return text.encode()
        if s.name == "int64":
            return _serdes.INT64.serialize(int(text))
        if s.name == "json":
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                obj = text
            return s.serialize(obj)
        return s.serialize(s.deserialize(text.encode()))
    except (ValueError, TypeError) as e:
        raise ToolError(f"key {text!r} cannot be read with the store's key serde {s.name}: {e}") from None


def store_key_matches(info: StoreInfo, changelog_key: bytes, key_bytes: bytes) -> bool:
    if info.kind == "timers":
        return changelog_key[9:] == key_bytes
    return changelog_key.startswith(key_prefix(key_bytes))


def contents(app: Any, store: str, key: bytes | None = None, raw: bool = False,
             timeout: float = 60.0) -> tuple[StoreInfo, list[Entry]]:
    """The decoded committed entries of ``store`` (of one serialized key when ``key`` is given);
    with ``raw`` undecoded (key and value bytes) for any store kind."""
    info = find_store(discover_stores(app), store)
    if not raw and not info.decodable:
        decode(info, {})  # raises: says which kind and suggests --raw
    entries = read_changelog(app.settings, info.changelog, timeout)
    if key is not None:
        entries = {k: v for k, v in entries.items() if store_key_matches(info, k, key)}
    if raw:
        return info, [Entry(k, v, p, k) for k, (p, v) in sorted(entries.items())]
    return info, decode(info, entries)


# --- commands ---------------------------------------------------------------------------------------

@command
def _cmd_stores(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    stores = discover_stores(app)
    if args.json:
        print(dumps([s.to_json() for s in stores.values()]))
    else:
        for s in stores.values():
            j = s.to_json()
            print(f"{s.name}\t{s.kind}{'' if s.decodable else ' (not decodable)'}\tkey={j['key_serde']}"
                  f"\tvalue={j['value_serde']}\tchangelog={s.changelog}")
    return EXIT_OK


def _print(entries: list[Entry], as_json: bool) -> None:
    for e in entries:
        print(dumps(e.to_json()) if as_json else e.to_text())


@command
def _cmd_get(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    info = find_store(discover_stores(app), args.store)
    kb = parse_key(args.key, info.key_serde, args.key_hex)
    _, entries = contents(app, info.name, key=kb, raw=args.raw)
    if not entries:
        print(f"kstreamlet: no committed value for key {args.key!r} in store {info.name}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json and len(entries) == 1 and info.kind not in ("window", "timers"):
        print(dumps(entries[0].to_json()))
    else:
        _print(entries, args.json)
    return EXIT_OK


@command
def _cmd_scan(args: argparse.Namespace) -> int:
    app = load_tool_app(args.app, args.bootstrap_servers)
    info, entries = contents(app, args.store, raw=args.raw)
    if args.limit is not None:
        entries = entries[:args.limit]
    _print(entries, args.json)
    if not args.json:
        print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in store {info.name} ({info.kind}, "
              f"changelog {info.changelog})", file=sys.stderr)
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``kstreamlet state ...``."""
    top = subparsers.add_parser(
        "state", help="look at an app's state stores (read from their changelogs, decoded)",
        description="A store's committed contents, read from its changelog with read_committed (works from any "
                    "machine, while the app runs or not) and decoded with the store's serdes.")
    sub = top.add_subparsers(dest="state_cmd", required=True)

    s = subparser(sub, "stores", "list the app's stores, their kinds, serdes and changelogs", """
  IN_TOPIC=lines OUT_TOPIC=counts kstreamlet state stores services.wordcount:app
""")
    s.add_argument("app", help="module:attribute of the App")
    add_connection_args(s)
    add_json_arg(s)
    s.set_defaults(fn=_cmd_stores)

    g = subparser(sub, "get", "the committed value of one key", """
  kstreamlet state get services.wordcount:app counts-value hello
  kstreamlet state get services.wordcount:app counts hello --json     # operator name: its one store
  kstreamlet state get myapp:app by-user-value '{"id": 7}'            # JSON key serde
  kstreamlet state get myapp:app totals-value 00ff --key-hex
""", description="The committed value of KEY in STORE (exit 1 when it has none). KEY is parsed with the store's "
                 "key serde: str/bytes as is, int64 a number, json a JSON document (other text: a JSON string).")
    g.add_argument("app", help="module:attribute of the App")
    g.add_argument("store", help="store name (see `state stores`), or an operator name with one store")
    g.add_argument("key")
    g.add_argument("--key-hex", action="store_true", help="KEY is the hex of the serialized key bytes")
    g.add_argument("--raw", action="store_true", help="print undecoded bytes (for any store kind)")
    add_connection_args(g)
    add_json_arg(g, "the entry as JSON (windows and timers: one object per line)")
    g.set_defaults(fn=_cmd_get)

    sc = subparser(sub, "scan", "every committed key and value of a store", """
  kstreamlet state scan services.wordcount:app counts-value
  kstreamlet state scan services.wordcount:app counts --json | jq -s 'map({(.key): .value}) | add'
  kstreamlet state scan myapp:app window-aggregate-0-windows --limit 20
""")
    sc.add_argument("app", help="module:attribute of the App")
    sc.add_argument("store", help="store name (see `state stores`), or an operator name with one store")
    sc.add_argument("--limit", type=int, help="at most this many entries (in key-byte order)")
    sc.add_argument("--raw", action="store_true", help="print undecoded bytes (for any store kind)")
    add_connection_args(sc)
    add_json_arg(sc, "one JSON object per entry (JSON lines)")
    sc.set_defaults(fn=_cmd_scan)


__all__ = ["add_parser", "StoreInfo", "Entry", "discover_stores", "find_store", "read_changelog", "decode",
           "parse_key", "contents"]

"""Store inspection: which stores an app declares, and a store's raw entries decoded with its serdes.

Shared by ``kstreamlet state`` (kstreamlet/tools/state.py, which reads the entries from a
store's changelog) and interactive queries (kstreamlet/query/, which read a live task's
committed store). Store discovery copies each keyed operator's function and opens it
(``open()``) against a recording context that notes the state it declares, as the runtime does
for a task, so ``open()`` must not need more than declaring state. Layouts:
:mod:`kstreamlet.state.codec`, :mod:`kstreamlet.state.keyed`.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from kstreamlet import serdes as _serdes
from kstreamlet.api.context import RuntimeContext
from kstreamlet.config import Settings
from kstreamlet.errors import InspectionError
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

#: InspectionError codes (the CLI's exit codes): not found, refused.
NOT_FOUND, REFUSED = 1, 2


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
            if getattr(node, "kind", "") == "map_async":  # records held across checkpoints (operators/async_ops.py)
                add(node.store_name, "async", node)
                continue
            if not isinstance(node, (KeyedProcessNode, BroadcastProcessNode)):
                continue
            key_serde = node.key_serde
            fn = copy.copy(node.fn)
            rec = _Recorder(_Task(settings), node)
            try:
                fn.open(rec)
            except Exception as e:
                raise InspectionError(f"cannot learn the state of operator {node.name}: its open() failed outside a task "
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
    for ``counts-value``); InspectionError (code 1) listing the stores otherwise."""
    if name in stores:
        return stores[name]
    by_op = [s for s in stores.values() if s.operator == name and s.kind not in ("timers",)]
    if len(by_op) == 1:
        return by_op[0]
    known = ", ".join(sorted(stores)) or "none"
    hint = f" (operator {name} has stores {', '.join(s.name for s in by_op)})" if by_op else ""
    raise InspectionError(f"no store {name!r} in the app{hint}; its stores: {known}", NOT_FOUND)


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
    """The decoded entries of a store, sorted by key bytes (InspectionError for a kind that cannot be decoded)."""
    if not info.decodable:
        raise InspectionError(f"store {info.name} ({info.kind}) has a layout kstreamlet state cannot decode; "
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
            raise InspectionError(f"--key-hex: {text!r} is not hex") from None
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
        raise InspectionError(f"key {text!r} cannot be read with the store's key serde {s.name}: {e}") from None


def store_key_matches(info: StoreInfo, changelog_key: bytes, key_bytes: bytes) -> bool:
    if info.kind == "timers":
        return changelog_key[9:] == key_bytes
    return changelog_key.startswith(key_prefix(key_bytes))


# --- rendering decoded data -------------------------------------------------------------------

def text_or_base64(raw: bytes | None) -> tuple[str | None, bool]:
    """``(text, is_base64)``: UTF-8 text when the bytes are valid UTF-8, else their base64."""
    if raw is None:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), True


def bytes_fields(name: str, raw: bytes | None) -> dict[str, Any]:
    """``{name: text}`` for UTF-8 bytes, ``{name + "_base64": ...}`` otherwise (None stays None)."""
    text, b64 = text_or_base64(raw)
    return {f"{name}_base64": text} if b64 else {name: text}


def jsonable(obj: Any) -> Any:
    """A decoded key or value as JSON-compatible data (pydantic models dumped, bytes as text or
    ``base64:...``, tuples and sets as lists)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (bytes, bytearray)):
        text, b64 = text_or_base64(bytes(obj))
        return f"base64:{text}" if b64 else text
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else json.dumps(jsonable(k)): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), ensure_ascii=False)


def show(obj: Any) -> str:
    """A decoded key or value for text output: strings as is, everything else as JSON."""
    if isinstance(obj, str):
        return obj
    return dumps(obj)

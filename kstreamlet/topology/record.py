"""What a topology's state is: its stores (with their serdes) and repartition topics, as records a
running application keeps, and the comparison that finds a change which would silently re-map state.

A state store is ``<operator>-<state>`` (``KeyedProcessNode.store_name``) and a repartition topic
``<application_id>-<name>-repartition``; the operator names are either given (``name=``) or
generated from the operator's kind and a counter in definition order (``count-0``, ``key_by-1``,
``window-aggregate-2``: see :meth:`TopologyBuilder.generated_name`). Adding an operator in front of
others shifts the generated names, and a store's name then points at another operator's state.

:func:`topology_record` describes every store and repartition topic: its operator and the operator's
kind (the function's class, e.g. ``RunningAggregate`` or ``WindowOperator``), the state kind
(value, list, map, ... or raw for operators that lay out their own bytes), its serdes, whether the
name was generated, and the *user* topics upstream of it (through repartition topics, whose names
may shift themselves). Stores are found as a task finds them: each stateful function is opened on a
copy with a recording context (nothing connects to Kafka). The runtime keeps these records in the
compacted topic ``<application_id>-topology`` (runtime/topology_check.py); :func:`compare` tells
what changed between the recorded and the current topology:

- ``shifted``: a store (or repartition topic) whose name is generated now belongs to a different
  operator (kind or upstream topics differ): the generated names shifted;
- ``operator``: the same for an explicitly named one (a name reused for another operator);
- ``serde``: a store's key or value serde changed (old state would not decode);
- ``layout``: a store was recorded with a newer byte layout (``ResourceRecord.layout``) than this
  code writes and reads (a downgrade; newer code reads older layouts, so an upgrade is no change);
- ``removed``: a recorded store is no longer in the topology (removed, or renamed / shifted: the
  message names a new store that looks like it).

:func:`check_reserved_names` rejects, when the topology is built, state a function declares
under a name the runtime uses itself (``timers``: the timer store of the same operator).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from kstreamlet.errors import TopologyError
from kstreamlet.topology.nodes import KeyedProcessNode, Node, SinkNode

#: State names the runtime gives stores of an operator itself: a function may not declare them.
RESERVED_STATE_NAMES = frozenset({"timers"})

#: Version of the record layout (a field of every record).
RECORD_VERSION = 1


@dataclass
class ResourceRecord:
    """One store or repartition topic of the topology, as recorded."""

    #: ``store`` or ``repartition``.
    resource: str
    #: The store's name, or the repartition topic.
    name: str
    #: The operator (node) declaring the store / the ``key_by`` writing the topic.
    operator: str
    #: What the operator is: its function's class (``RunningAggregate``, ``WindowOperator``, ...) or ``key_by``.
    operator_kind: str
    #: value | list | map | reducing | aggregating | operator-list | timers | sink | raw | repartition.
    state_kind: str
    key_serde: str | None = None
    value_serde: str | None = None
    #: The operator's name was generated (not given with ``name=``).
    generated: bool = False
    #: User topics upstream of the operator (through repartition topics), sorted.
    upstream: list[str] = field(default_factory=list)
    version: int = RECORD_VERSION
    #: Version of the store's byte layout (an operator's ``state_layouts``; 0 = the original one). A
    #: newer kstreamlet reads older layouts; a store recorded with a newer layout than the current
    #: code writes is a downgrade, which would misread it (``layout`` change).
    layout: int = 0

    @property
    def key(self) -> str:
        return f"{self.resource}:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ResourceRecord":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def what(self) -> str:
        """``'RunningAggregate (value state, serde INT64) of operator 'count-0' reading [words]'``."""
        upstream = ", ".join(self.upstream) if self.upstream else "no topic"
        if self.resource != "store":
            return f"key_by {self.operator!r} reading [{upstream}]"
        serde = f", serde {self.value_serde}" if self.value_serde else ""
        return f"{self.operator_kind} ({self.state_kind} state{serde}) of operator {self.operator!r} reading [{upstream}]"


@dataclass
class Change:
    """A difference that would re-map state silently."""

    kind: str  # shifted | operator | serde | layout | removed
    name: str  # the store or topic
    message: str


# --- the stores of a topology --------------------------------------------------------------------------


class _Recorder:
    """Just enough of a task (``TaskServices``) for ``open()``: in-memory stores; notes each store
    and the descriptor it was declared with."""

    def __init__(self, settings: Any) -> None:
        from kstreamlet.state.keyed import KeyContext

        self.id = "topology-record"
        self.partition = 0
        self.msg = None
        self.settings = settings
        self.clock = lambda: 0
        self.keyctx = KeyContext(self.clock)
        self.operator_keyctx = KeyContext(self.clock)
        self.collector = None
        self.watermark = -(2 ** 63)
        #: store name -> (state kind, value serde name)
        self.stores: dict[str, tuple[str, str | None]] = {}

    def store(self, name: str) -> Any:
        from kstreamlet.state.backend import MemoryBackend
        from kstreamlet.state.store import Store

        self.stores.setdefault(name, ("raw", None))
        return Store(name, 0, MemoryBackend(), None, None)

    def note(self, name: str, kind: str, serde: str | None) -> None:
        self.stores[name] = (kind, serde)

    def read_all_partitions(self, store: Any) -> dict[int, dict[bytes, bytes]]:
        return {}

    def partitions_of(self, topic: str) -> int:
        return 1

    def __getattr__(self, name: str) -> Any:  # anything else an open() might touch: harmless no-ops
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: None


def _descriptor(desc: Any) -> tuple[str, str | None]:
    from kstreamlet.state.keyed import (AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
                                        ReducingStateDescriptor, ValueStateDescriptor)

    if isinstance(desc, MapStateDescriptor):
        return "map", f"{_serde(desc.key_serde)} -> {_serde(desc.value_serde)}"
    if isinstance(desc, AggregatingStateDescriptor):
        return "aggregating", _serde(desc.accumulator_serde)
    if isinstance(desc, ReducingStateDescriptor):
        return "reducing", _serde(desc.serde)
    if isinstance(desc, ListStateDescriptor):
        return "list", _serde(desc.serde)
    if isinstance(desc, ValueStateDescriptor):
        return "value", _serde(desc.serde)
    return type(desc).__name__, None


def _serde(s: Any) -> str | None:
    if s is None:
        return None
    return str(getattr(s, "name", None) or type(s).__name__)


def _recording_context(task: _Recorder, node: Any) -> Any:
    from kstreamlet.api.context import RuntimeContext

    class RecordingContext(RuntimeContext):
        def state(self, desc: Any) -> Any:
            out = super().state(desc)
            task.note(node.store_name(desc.name), *_descriptor(desc))
            return out

        def get_operator_list_state(self, desc: Any) -> Any:
            out = super().get_operator_list_state(desc)
            task.note(node.store_name(desc.name), "operator-list", _descriptor(desc)[1])
            return out

        def get_union_list_state(self, desc: Any) -> Any:
            out = super().get_union_list_state(desc)
            task.note(node.store_name(desc.name), "operator-list", _descriptor(desc)[1])
            return out

    return RecordingContext(task, node)  # type: ignore[arg-type]


@dataclass
class _Declared:
    """What opening an operator's function declared."""

    stores: dict[str, tuple[str, str | None]]
    #: Descriptor names as the function declared them (for the reserved-name check).
    state_names: list[str]
    ok: bool = True


def declared_stores(n: Node, settings: Any) -> _Declared | None:
    """The stores of node ``n``, found by opening a copy of its function on a recording task (None:
    the node has no state). ``describe`` and the recorded topology both use it."""
    store_name = getattr(n, "store_name", None)
    if getattr(n, "kind", "") == "sink2pc":  # a two-phase-commit sink: its committable store (+ timers)
        stores: dict[str, tuple[str, str | None]] = {str(store_name): ("sink", None)}
        if getattr(n, "uses_processing_time", False):
            stores[str(getattr(n, "timer_store_name"))] = ("timers", None)
        return _Declared(stores, [])
    if getattr(n, "kind", "") == "map_async":  # its records held across checkpoints
        return _Declared({str(store_name): ("async", None)}, [])
    fn = getattr(n, "fn", None)
    if fn is None or not callable(store_name) or not callable(getattr(fn, "open", None)):
        return None
    task = _Recorder(settings)
    names: list[str] = []

    class Namer:
        def store_name(self, state: str) -> str:
            names.append(state)
            return store_name(state)  # type: ignore[misc,no-any-return]

    ok = True
    try:
        f = copy.copy(fn)
        f.open(_recording_context(task, Namer()))
        close = getattr(f, "close", None)
        if callable(close):
            close()
    except Exception:
        ok = False
    stores = dict(task.stores)
    has_timers = False
    if isinstance(n, KeyedProcessNode):
        has_timers = n._has_timers()
    elif getattr(n, "key_serde", None) is not None and hasattr(fn, "on_timer"):  # a keyed broadcast function
        from kstreamlet.api.functions import KeyedProcessFunction

        has_timers = type(fn).on_timer is not KeyedProcessFunction.on_timer
    if has_timers:
        stores.setdefault(store_name("timers"), ("timers", None))
    return _Declared(stores, names, ok)


def _upstream_user_topics(topology: Any) -> dict[int, list[str]]:
    """Sub-topology id -> the user topics upstream of it (repartition topics followed to their writers)."""
    repartition = {t for t in topology.internal_topics if t.endswith("-repartition")}
    writers: dict[str, list[int]] = {}
    for st in topology.subtopologies:
        for sink in st.sinks:
            writers.setdefault(sink.topic, []).append(st.id)
    by_id = {st.id: st for st in topology.subtopologies}
    out: dict[int, list[str]] = {}

    def walk(sid: int, seen: set[int]) -> set[str]:
        if sid in seen:
            return set()
        seen.add(sid)
        found: set[str] = set()
        for t in by_id[sid].sources:
            if t in repartition:
                for w in writers.get(t, []):
                    found |= walk(w, seen)
            else:
                found.add(t)
        return found

    for st in topology.subtopologies:
        out[st.id] = sorted(walk(st.id, set()))
    return out


def topology_record(topology: Any, settings: Any = None,
                    generated: Any = None) -> tuple[dict[str, ResourceRecord], list[str]]:
    """``({record key: record}, operators whose stores could not be found)`` of ``topology``.

    ``generated(name) -> bool`` says whether an operator name was generated (default: the
    builder's answer recorded on the topology)."""
    is_generated = generated or getattr(topology, "is_generated_name", lambda name: False)
    upstream = _upstream_user_topics(topology)
    out: dict[str, ResourceRecord] = {}
    unknown: list[str] = []
    for st in topology.subtopologies:
        for n in st.nodes:
            if isinstance(n, SinkNode):
                if n.internal and n.key_fn is not None:
                    r = ResourceRecord("repartition", n.topic, _repartition_name(n.topic, topology), "key_by",
                                       "repartition",
                                       _serde(n.key_serde), _serde(n.value_serde),
                                       bool(is_generated(_repartition_name(n.topic, topology))),
                                       upstream[st.id])
                    out[r.key] = r
                continue
            d = declared_stores(n, settings)
            if d is None:
                continue
            if not d.ok:
                unknown.append(n.name)
            fn = getattr(n, "fn", None)
            op_kind = type(fn).__name__ if fn is not None and n.kind != "map_async" else n.kind
            key_serde = _serde(getattr(n, "key_serde", None))
            layouts = getattr(fn, "state_layouts", None) or {}
            for store, (kind, serde) in d.stores.items():
                r = ResourceRecord("store", store, n.name, op_kind, kind, key_serde, serde,
                                   bool(is_generated(n.name)), upstream[st.id],
                                   layout=int(layouts.get(store[len(n.name) + 1:], 0)))
                out[r.key] = r
    return out, unknown


def _repartition_name(topic: str, topology: Any) -> str:
    """``<application_id>-<name>-repartition`` -> ``<name>`` (the application id is the longest
    common prefix the topology knows; fall back to the topic itself)."""
    prefix = getattr(topology, "application_id", None)
    if prefix and topic.startswith(prefix + "-") and topic.endswith("-repartition"):
        return topic[len(prefix) + 1:-len("-repartition")]
    return topic


def check_reserved_names(topology: Any, settings: Any = None) -> None:
    """Raise TopologyError for state declared under a name the runtime reserves (``timers``)."""
    problems = []
    for st in topology.subtopologies:
        for n in st.nodes:
            if isinstance(n, SinkNode):
                continue
            d = declared_stores(n, settings)
            if d is None:
                continue
            for name in d.state_names:
                if name in RESERVED_STATE_NAMES:
                    problems.append(
                        f"operator {n.name!r} declares state {name!r}, a name kstreamlet reserves for the operator's "
                        f"own {name} store ({n.name}-{name}); rename the state descriptor (e.g. "
                        f"ValueStateDescriptor('my-{name}', ...))")
    if problems:
        raise TopologyError("; ".join(dict.fromkeys(problems)))


# --- comparing ---------------------------------------------------------------------------------------------


def _same_operator(a: ResourceRecord, b: ResourceRecord) -> bool:
    return a.operator_kind == b.operator_kind and a.state_kind == b.state_kind and a.upstream == b.upstream


def compare(recorded: dict[str, ResourceRecord], current: dict[str, ResourceRecord],
            unknown_operators: Iterable[str] = ()) -> list[Change]:
    """The changes between the recorded and the current topology that would re-map state."""
    unknown = set(unknown_operators)
    changes: list[Change] = []
    new = {k: r for k, r in current.items() if k not in recorded}
    for key, old in sorted(recorded.items()):
        cur = current.get(key)
        if cur is None:
            if old.resource != "store" or old.operator in unknown:
                continue  # a removed repartition topic loses nothing but records in flight
            like = [r.name for r in new.values() if r.resource == "store" and _same_operator(old, r)]
            hint = (f"; the new store {like[0]!r} is the same kind of state: if the operator was renamed or the "
                    "generated names shifted, give it name=" f"{old.operator!r}" if like else "")
            changes.append(Change("removed", old.name, f"store {old.name!r} ({old.what()}) is no longer in the "
                                                       f"topology{hint}"))
            continue
        if not _same_operator(old, cur):
            if old.generated or cur.generated:
                moved = [r for r in new.values() if r.resource == old.resource and _same_operator(old, r)]
                fix = (f"; keep it with name={old.operator!r} on the operator now generated as {moved[0].operator!r}, "
                       f"and give the new one its own name" if moved else "")
                changes.append(Change("shifted", old.name, (
                    f"{_label(old)} {old.name!r} belonged to {old.what()}, now to {cur.what()}: adding or removing "
                    f"an operator shifted the generated names, so {cur.operator!r} would take over another "
                    f"operator's state{fix}")))
            else:
                changes.append(Change("operator", old.name, (
                    f"{_label(old)} {old.name!r} belonged to {old.what()}, now to {cur.what()}: the name "
                    "is reused for another operator")))
            continue
        if old.layout > cur.layout:
            changes.append(Change("layout", old.name, (
                f"{_label(old)} {old.name!r} of operator {cur.operator!r} was written in layout {old.layout}, newer "
                f"than the layout {cur.layout} this kstreamlet version reads (a downgrade): its entries would be "
                "misread; run the newer version, or reset the store")))
        for what, a, b in (("key serde", old.key_serde, cur.key_serde), ("value serde", old.value_serde, cur.value_serde)):
            if a != b:
                changes.append(Change("serde", old.name, (
                    f"{_label(old)} {old.name!r} of operator {cur.operator!r}: {what} changed {a} -> {b}; what "
                    f"is stored was written with {a} and would not decode")))
    return changes


def _label(r: ResourceRecord) -> str:
    return "store" if r.resource == "store" else "repartition topic"


def explain(changes: list[Change], application_id: str, topic: str) -> str:
    """The fail-fast message: what changed, per store, and the two ways out."""
    lines = [f"the topology of {application_id!r} changed in a way that would silently re-map its state "
             f"(recorded in topic {topic}):"]
    lines += [f"  - {c.message}" for c in changes]
    stores = sorted({c.name for c in changes})
    lines.append("Fix: name the stateful operators and key_by()s explicitly with name= so each keeps its state "
                 "(for shifted generated names: the old name, e.g. .count(name='count-0')); see "
                 "docs/operations.md, \"Upgrading a running application\".")
    lines.append("Or, if the change is intended: stop the app, reset its state with `kstreamlet reset module:app` "
                 f"(the affected: {', '.join(stores)}; a reset reprocesses the inputs), and start once with "
                 "allow_topology_change=true (env KSTREAMLET_ALLOW_TOPOLOGY_CHANGE=true, or kstreamlet run "
                 "--allow-topology-change), which records the new topology.")
    return "\n".join(lines)


__all__ = ["ResourceRecord", "Change", "topology_record", "compare", "explain", "check_reserved_names",
           "RESERVED_STATE_NAMES"]

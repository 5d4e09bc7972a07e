"""The topology builder the DSL writes into, and how it splits the node graph into sub-topologies.

:class:`TopologyBuilder` (Kafka Streams' ``InternalStreamsBuilder``) owns what the DSL
registers: names, sources, repartition and other internal topics, operator numbering,
broadcasts and custom sources. :meth:`TopologyBuilder.build` returns the complete
:class:`Topology` the runtime runs.

A sub-topology is a connected set of nodes between source topics and sink topics.
Repartition topics (``key_by``) cut the graph: the upstream part ends in a sink to the
repartition topic, the downstream part starts at a source reading it. A task is one
sub-topology on one partition number; a sub-topology with several source topics
(``merge``) reads the same partition of each (they must be co-partitioned).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from kstreamlet.errors import TopologyError
from kstreamlet.serdes import Serde
from kstreamlet.topology.nodes import BranchNode, Node, SideOutputNode, SinkNode, SourceNode


@dataclass
class SubTopology:
    id: int
    sources: dict[str, SourceNode]
    nodes: list[Node]
    sinks: list[SinkNode] = field(default_factory=list)

    @property
    def topics(self) -> list[str]:
        return list(self.sources)


@dataclass
class InternalTopic:
    name: str
    partitions: int | None  # None until resolved from upstream source partition counts
    config: dict[str, str] = field(default_factory=dict)


@dataclass
class BroadcastSpec:
    """A broadcast input: every member reads all of ``topic`` (see :mod:`kstreamlet.dsl.broadcast`)."""

    topic: str
    key_serde: Serde[Any]
    value_serde: Serde[Any]


@dataclass
class CustomSourceSpec:
    """A custom source (``app.source`` / ``app.broadcast(source=...)``) feeding the internal ``topic``."""

    name: str
    source: Any
    topic: str
    key_serde: Serde[Any]
    value_serde: Serde[Any]


def _neighbours(n: Node) -> list[Node]:
    out = list(n.children) + list(n.parents)
    if isinstance(n, SideOutputNode):
        for cs in n.side_children.values():
            out.extend(cs)
    if isinstance(n, BranchNode):
        for cs in n.branch_children:
            out.extend(cs)
    return out


@dataclass
class Topology:
    """The built, immutable description of what the app runs."""

    subtopologies: list[SubTopology]
    internal_topics: dict[str, InternalTopic]
    #: Broadcast topic -> its spec (every member reads each of these topics whole).
    broadcasts: dict[str, BroadcastSpec] = field(default_factory=dict)
    #: Custom sources the members run (each writes its internal topic).
    custom_sources: list[CustomSourceSpec] = field(default_factory=list)
    #: Prefix of the internal topics (``<application_id>-<name>-repartition``).
    application_id: str = ""
    #: Operator / key_by names the builder generated (not given with ``name=``); see :meth:`is_generated_name`.
    generated_names: frozenset[str] = frozenset()

    def is_generated_name(self, name: str) -> bool:
        """Whether ``name`` (an operator's, or a key_by's) was generated, or derived from a generated
        one (a join's ``<join>-left`` / ``-right`` repartitions)."""
        return name in self.generated_names or any(name.startswith(g + "-") for g in self.generated_names)

    def subtopology_of(self, topic: str) -> SubTopology:
        for st in self.subtopologies:
            if topic in st.sources:
                return st
        raise KeyError(topic)

    @property
    def source_topics(self) -> list[str]:
        return [t for st in self.subtopologies for t in st.sources]

    @property
    def has_copartitioned_inputs(self) -> bool:
        return any(len(st.sources) > 1 for st in self.subtopologies)

    @property
    def uses_event_time(self) -> bool:
        """Whether any operator needs watermarks (then repartition topics forward them)."""
        return any(getattr(n, "uses_event_time", False) for st in self.subtopologies for n in st.nodes)

    def forwarded_inputs(self, partitions_of: "Callable[[str], int]") -> dict[str, int]:
        """Repartition topic -> number of upstream tasks writing it (= their input partitions)."""
        out: dict[str, int] = {}
        if not self.uses_event_time:
            return out
        for st in self.subtopologies:
            for sink in st.sinks:
                if sink.internal and sink.key_fn is not None:
                    out[sink.topic] = partitions_of(next(iter(st.sources)))
        return out

    def describe(self) -> str:
        lines = []
        for st in self.subtopologies:
            lines.append(f"Sub-topology {st.id}: sources={st.topics} sinks={[s.topic for s in st.sinks]}")
            lines.append("  " + " -> ".join(n.name for n in st.nodes))
        return "\n".join(lines)


def build_topology(sources: list[SourceNode], internal_topics: dict[str, InternalTopic],
                   broadcasts: dict[str, BroadcastSpec] | None = None,
                   custom_sources: list[CustomSourceSpec] | None = None, application_id: str = "",
                   generated_names: frozenset[str] = frozenset()) -> Topology:
    if not sources:
        raise TopologyError("the app defines no streams: call app.stream(...) before running it")
    seen: dict[int, int] = {}
    subs: list[SubTopology] = []
    for src in sources:
        if src.id in seen:
            continue
        sid = len(subs)
        stack: list[Node] = [src]
        nodes: list[Node] = []
        while stack:
            n = stack.pop()
            if n.id in seen:
                continue
            seen[n.id] = sid
            nodes.append(n)
            stack.extend(_neighbours(n))
        nodes.sort(key=lambda n: n.id)
        st_sources: dict[str, SourceNode] = {}
        for n in nodes:
            if isinstance(n, SourceNode):
                if n.topic in st_sources:
                    raise TopologyError(f"topic {n.topic!r} is read twice in one sub-topology; read it once and reuse the stream")
                st_sources[n.topic] = n
        subs.append(SubTopology(sid, st_sources, nodes, [n for n in nodes if isinstance(n, SinkNode)]))
    all_topics = [t for st in subs for t in st.sources]
    dup = {t for t in all_topics if all_topics.count(t) > 1}
    if dup:
        raise TopologyError(f"topics {sorted(dup)} are read by several unconnected streams; read each topic once")
    return Topology(subs, internal_topics, broadcasts if broadcasts is not None else {},
                    custom_sources if custom_sources is not None else [], application_id, generated_names)


class TopologyBuilder:
    """What the DSL handles register while the app is defined; :meth:`build` makes the Topology once."""

    def __init__(self, application_id: str) -> None:
        #: Prefix of the internal topics' names (kept in step with the app's settings).
        self.application_id = application_id
        self.sources: list[SourceNode] = []
        self.internal_topics: dict[str, InternalTopic] = {}
        self.custom_sources: list[CustomSourceSpec] = []
        self.broadcasts: dict[str, BroadcastSpec] = {}
        self._names: set[str] = set()
        #: Names the builder generated (``generated_name``, unnamed key_by): the recorded topology
        #: tells shifted generated names from renamed operators by them (topology/record.py).
        self.generated: set[str] = set()
        self._op_counter = -1
        self._topology: Topology | None = None

    def check_name(self, name: str) -> None:
        """A name that names a topic: valid characters, and used once in the app."""
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(f"name {name!r} must be letters, digits, '.', '_' or '-' (it names a topic)")
        if name in self._names:
            raise ValueError(f"name {name!r} is used twice in this app")
        self._names.add(name)

    def add_source(self, node: SourceNode) -> None:
        if self._topology is not None:
            raise RuntimeError("the topology was already built; define all streams before running")
        self.sources.append(node)

    def next_op_id(self) -> int:
        """Deterministic numbering of unnamed stateful operators (names their stores)."""
        self._op_counter += 1
        return self._op_counter

    def generated_name(self, kind: str) -> str:
        """The name of an operator defined without ``name=``: ``<kind>-<n>``, ``n`` counting the
        unnamed stateful operators of the app in definition order. Adding one in front of others
        shifts theirs; the start-up check detects that (docs/operations.md, "Upgrading a running
        application"); ``name=`` avoids it."""
        name = f"{kind}-{self.next_op_id()}"
        self.generated.add(name)
        return name

    def repartition_topic(self, name: str | None, partitions: int | None) -> str:
        """The internal topic ``<application_id>-<name>-repartition`` of a ``key_by``; without a
        ``name``, ``key_by-<n>`` (``n`` = internal topics defined before it)."""
        if not name:
            name = f"key_by-{len(self.internal_topics)}"
            self.generated.add(name)
        self.check_name(name)
        topic = f"{self.application_id}-{name}-repartition"
        self.internal_topics[topic] = InternalTopic(topic, partitions)
        return topic

    def add_custom_source(self, name: str, source: Any, key_serde: Serde[Any], value_serde: Serde[Any],
                          partitions: int) -> str:
        """A custom source writing the internal topic ``<application_id>-source-<name>`` (returned);
        ``name`` was checked with :meth:`check_name`."""
        topic = f"{self.application_id}-source-{name}"
        self.internal_topics[topic] = InternalTopic(topic, partitions)
        self.custom_sources.append(CustomSourceSpec(name, source, topic, key_serde, value_serde))
        return topic

    def add_broadcast_source(self, name: str, source: Any, key_serde: Serde[Any], value_serde: Serde[Any]) -> str:
        """A broadcast source writing the compacted internal topic ``<application_id>-broadcast-<name>``
        (returned); ``name`` was checked with :meth:`check_name`."""
        topic = f"{self.application_id}-broadcast-{name}"
        self.internal_topics[topic] = InternalTopic(topic, 1, {"cleanup.policy": "compact"})
        self.custom_sources.append(CustomSourceSpec(name, source, topic, key_serde, value_serde))
        return topic

    def add_broadcast(self, spec: BroadcastSpec) -> None:
        self.broadcasts[spec.topic] = spec

    @property
    def built(self) -> bool:
        return self._topology is not None

    def build(self) -> Topology:
        """Build (once) and return the topology; raises TopologyError if it cannot run."""
        if self._topology is None:
            from kstreamlet.topology.record import check_reserved_names

            topology = build_topology(self.sources, self.internal_topics, self.broadcasts, self.custom_sources,
                                      self.application_id, frozenset(self.generated))
            check_reserved_names(topology)
            self._topology = topology
        return self._topology


def plan_internal_partitions(topology: Topology, existing: Callable[[str], int | None]) -> dict[str, int]:
    """Partition counts for the internal topics that do not exist yet.

    ``existing(topic)`` gives the partition count of a topic that exists (user topics, internal
    topics made by an earlier run) or None. An internal topic takes its declared count, else the
    largest over the inputs of the sub-topologies writing it (resolved in rounds, since one
    repartition topic may feed the writer of another); then the internal inputs of a
    multi-input sub-topology (joins) that have no declared count are made equal to the largest
    of its other inputs. The member (``prepare_topics``) creates what this returns; the
    TopologyTestDriver uses the same plan, so a driver test partitions like production."""
    desired: dict[str, int] = {}

    def known(t: str) -> int | None:
        return existing(t) or desired.get(t)

    unresolved = {name: it for name, it in topology.internal_topics.items() if existing(name) is None}
    for _ in range(len(unresolved) + 1):
        for name, it in list(unresolved.items()):
            n = it.partitions
            if n is None:
                writers = [st for st in topology.subtopologies if any(k.topic == name for k in st.sinks)]
                src_counts = [known(t) for st in writers for t in st.sources]
                if src_counts and all(c is not None for c in src_counts):
                    n = max(c for c in src_counts if c is not None)
                elif not writers:
                    n = 1
            if n is not None:
                desired[name] = n
                unresolved.pop(name)
    if unresolved:
        raise TopologyError(f"cannot determine partition counts of internal topics {sorted(unresolved)}")
    for st in topology.subtopologies:
        if len(st.sources) < 2:
            continue
        adjustable = [t for t in st.sources if t in desired and topology.internal_topics[t].partitions is None]
        fixed = [c for t in st.sources if t not in adjustable and (c := known(t)) is not None]
        target = max(fixed) if fixed else max(desired[t] for t in adjustable)
        for t in adjustable:
            desired[t] = target
    return desired

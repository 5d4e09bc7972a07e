"""Splits the DSL's node graph into sub-topologies.

A sub-topology is a connected set of nodes between source topics and sink topics.
Repartition topics (``key_by``) cut the graph: the upstream part ends in a sink to the
repartition topic, the downstream part starts at a source reading it. A task is one
sub-topology on one partition number; a sub-topology with several source topics
(``merge``) reads the same partition of each (they must be co-partitioned).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from kstreamlet.errors import TopologyError
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


def build_topology(sources: list[SourceNode], internal_topics: dict[str, InternalTopic]) -> Topology:
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
    return Topology(subs, internal_topics)

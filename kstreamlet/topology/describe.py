"""The built topology in words: Kafka Streams' ``Topology#describe()`` text, a Mermaid flowchart, JSON.

``kstreamlet describe module:app`` and ``app.describe()`` print it. The text follows Kafka
Streams' layout (``Sub-topology: N``, ``Source:`` / ``Processor:`` / ``Sink:`` lines with
``-->`` successors and ``<--`` predecessors, ``(stores: [...])`` on processors) and adds what
kstreamlet creates around it: internal topics (repartition, changelog, custom-source and
broadcast-source topics), broadcast inputs, custom sources and the dead-letter topic.

Stores are found the way a task finds them: each stateful function is opened (on a copy) with
a recording context that hands out in-memory stores and notes their names; nothing connects
to Kafka or any other server. A function whose ``open`` fails is listed with ``stores: [?]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kstreamlet.topology.builder import Topology
from kstreamlet.topology.nodes import BranchNode, Node, SideOutputNode, SinkNode, SourceNode
from kstreamlet.topology.record import declared_stores

FORMATS = ("text", "mermaid", "json")


@dataclass
class NodeInfo:
    name: str
    role: str  # source | processor | sink
    kind: str
    topics: list[str] = field(default_factory=list)  # source: topics read; sink: topic written
    stores: list[str] | None = field(default_factory=list)  # None: could not be determined
    successors: list[str] = field(default_factory=list)
    predecessors: list[str] = field(default_factory=list)
    key_serde: str | None = None
    value_serde: str | None = None


def _successors(n: Node) -> list[Node]:
    out = list(n.children)
    if isinstance(n, SideOutputNode):
        for cs in n.side_children.values():
            out.extend(cs)
    if isinstance(n, BranchNode):
        for cs in n.branch_children:
            out.extend(cs)
    return out


def _stores_of(n: Node, settings: Any) -> list[str] | None:
    """The store names of node ``n`` in declaration order ([] for a node without state; None when
    its function's ``open()`` failed on the recording task). One discovery serves this and the
    recorded topology (:func:`kstreamlet.topology.record.declared_stores`)."""
    d = declared_stores(n, settings)
    if d is None:
        return []
    return list(d.stores) if d.ok else None


def _source_name(src: Any) -> str:
    if hasattr(src, "run") or not hasattr(src, "__name__"):
        return type(src).__name__
    return str(src.__name__)  # a generator function


def _serde_name(s: Any) -> str | None:
    return getattr(s, "name", None)


def topology_info(topology: Topology, application_id: str, settings: Any = None) -> dict[str, Any]:
    """The topology as plain data (the ``--format json`` output)."""
    from kstreamlet.state.factory import changelog_topic

    subs = []
    stores_seen: list[str] = []
    for st in topology.subtopologies:
        nodes = []
        for n in st.nodes:
            role = "source" if isinstance(n, SourceNode) else "sink" if isinstance(n, SinkNode) else "processor"
            info = NodeInfo(n.name, role, n.kind, successors=[c.name for c in _successors(n)],
                            predecessors=[p.name for p in n.parents])
            if isinstance(n, SourceNode):
                info.topics = [n.topic]
                info.key_serde, info.value_serde = _serde_name(n.key_serde), _serde_name(n.value_serde)
                info.stores = []
            elif isinstance(n, SinkNode):
                info.topics = [n.topic]
                info.key_serde, info.value_serde = _serde_name(n.key_serde), _serde_name(n.value_serde)
                info.stores = []
            else:
                info.stores = _stores_of(n, settings)
                broadcast = getattr(n, "broadcast", None)
                if broadcast is not None:
                    info.topics = [broadcast.topic]
                stores_seen.extend(info.stores or [])
            nodes.append(info.__dict__)
        subs.append({"id": st.id, "source_topics": st.topics, "sink_topics": [s.topic for s in st.sinks],
                     "nodes": nodes})
    internal = []
    custom_by_topic = {c.topic: c for c in topology.custom_sources}
    for name, it in topology.internal_topics.items():
        kind = "repartition"
        if name in custom_by_topic:
            kind = "broadcast-source" if name in topology.broadcasts else "source"
        internal.append({"name": name, "kind": kind, "partitions": it.partitions, "config": dict(it.config)})
    for store in dict.fromkeys(stores_seen):
        internal.append({"name": changelog_topic(application_id, store), "kind": "changelog", "store": store,
                         "partitions": None, "config": {"cleanup.policy": "compact"}})
    broadcasts = []
    for topic, spec in topology.broadcasts.items():
        readers = [n.name for st in topology.subtopologies for n in st.nodes
                   if getattr(getattr(n, "broadcast", None), "topic", None) == topic]
        broadcasts.append({"topic": topic, "key_serde": _serde_name(spec.key_serde),
                           "value_serde": _serde_name(spec.value_serde), "processors": readers})
    customs = [{"name": c.name, "topic": c.topic, "source": _source_name(c.source)} for c in topology.custom_sources]
    dlq = getattr(settings, "effective_dlq_topic", None) if getattr(settings, "error_policy", "dlq") == "dlq" else None
    return {"application_id": application_id, "subtopologies": subs, "internal_topics": internal,
            "broadcasts": broadcasts, "custom_sources": customs, "dlq_topic": dlq}


def _arrow_list(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def to_text(info: dict[str, Any]) -> str:
    """Kafka Streams' ``TopologyDescription`` layout, then kstreamlet's topics."""
    out = ["Topologies:"]
    for st in info["subtopologies"]:
        out.append(f"   Sub-topology: {st['id']}")
        for n in st["nodes"]:
            if n["role"] == "source":
                out.append(f"    Source: {n['name']} (topics: [{', '.join(n['topics'])}])")
                out.append(f"      --> {_arrow_list(n['successors'])}")
            elif n["role"] == "sink":
                out.append(f"    Sink: {n['name']} (topic: {n['topics'][0]})")
                out.append(f"      <-- {_arrow_list(n['predecessors'])}")
            else:
                stores = "?" if n["stores"] is None else ", ".join(n["stores"])
                extra = f" (broadcast: {n['topics'][0]})" if n["topics"] else ""
                out.append(f"    Processor: {n['name']} (stores: [{stores}]){extra}")
                out.append(f"      --> {_arrow_list(n['successors'])}")
                out.append(f"      <-- {_arrow_list(n['predecessors'])}")
        out.append("")
    if info["internal_topics"]:
        out.append("   Internal topics:")
        for t in info["internal_topics"]:
            parts = [t["kind"] + (f" of store {t['store']}" if t.get("store") else "")]
            if t["partitions"] is not None:
                parts.append(f"partitions: {t['partitions']}")
            parts.extend(f"{k}={v}" for k, v in t["config"].items())
            out.append(f"    {t['name']} ({', '.join(parts)})")
        out.append("")
    if info["broadcasts"]:
        out.append("   Broadcast inputs (every member reads all of each):")
        for b in info["broadcasts"]:
            out.append(f"    {b['topic']} --> {_arrow_list(b['processors'])}")
        out.append("")
    if info["custom_sources"]:
        out.append("   Custom sources:")
        for c in info["custom_sources"]:
            out.append(f"    {c['name']} ({c['source']}) --> {c['topic']}")
        out.append("")
    if info["dlq_topic"]:
        out.append(f"   Dead-letter topic: {info['dlq_topic']}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


class _Ids:
    """Mermaid node ids: ``<prefix><name with other characters as _>``, made unique."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], str] = {}
        self._used: set[str] = set()

    def __call__(self, prefix: str, name: str) -> str:
        key = (prefix, name)
        if key not in self._ids:
            base = prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)
            mid, i = base, 1
            while mid in self._used:
                i += 1
                mid = f"{base}_{i}"
            self._used.add(mid)
            self._ids[key] = mid
        return self._ids[key]


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(info: dict[str, Any]) -> str:
    """A Mermaid ``flowchart LR``: a subgraph per sub-topology, topics as stadiums, stores as cylinders."""
    out = ["flowchart LR"]
    _mid = _Ids()
    topics: dict[str, str] = {}
    stores: dict[str, str] = {}
    edges: list[str] = []

    def topic(name: str) -> str:
        if name not in topics:
            topics[name] = _mid("t_", name)
        return topics[name]

    for st in info["subtopologies"]:
        out.append(f'  subgraph st{st["id"]}["Sub-topology {st["id"]}"]')
        for n in st["nodes"]:
            nid = _mid("n_", n["name"])
            out.append(f'    {nid}["{_label(n["name"])}<br/>{n["kind"]}"]')
            if n["role"] == "source":
                edges.append(f"  {topic(n['topics'][0])} --> {nid}")
            elif n["role"] == "sink":
                edges.append(f"  {nid} --> {topic(n['topics'][0])}")
            elif n["topics"]:
                edges.append(f"  {topic(n['topics'][0])} -. broadcast .-> {nid}")
            for c in n["successors"]:
                edges.append(f"  {nid} --> {_mid('n_', c)}")
            for s in n["stores"] or []:
                sid = stores.setdefault(s, _mid("s_", s))
                edges.append(f"  {nid} --- {sid}")
        out.append("  end")
    for name, tid in topics.items():
        out.append(f'  {tid}(["{_label(name)}"])')
    for name, sid in stores.items():
        out.append(f'  {sid}[("{_label(name)}")]')
    out.extend(edges)
    return "\n".join(out) + "\n"


def describe(topology: Topology, application_id: str, format: str = "text", settings: Any = None) -> Any:
    """``format`` ``text`` or ``mermaid``: a str; ``json``: a dict (see :func:`topology_info`)."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    info = topology_info(topology, application_id, settings)
    if format == "json":
        return info
    return to_text(info) if format == "text" else to_mermaid(info)


__all__ = ["describe", "topology_info", "to_text", "to_mermaid", "FORMATS"]

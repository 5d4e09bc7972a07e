"""The stream DSL: what users chain to describe their processing.

A :class:`Stream` is an immutable handle on a node of the topology graph; every method
adds a node and returns a new handle. Elements are *values*; every record also carries
a key and a timestamp (ms) that flow along unchanged unless an operator sets them.

Example::

    app = App(application_id="wordcount")
    lines = app.stream("lines", value_serde=serdes.STR)
    (lines.flat_map(str.split)
          .filter(lambda w: len(w) > 2)
          .key_by(lambda w: w, key_serde=serdes.STR, value_serde=serdes.STR)
          .to("words"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from kstreamlet import serdes as _serdes
from kstreamlet.serdes import Serde
from kstreamlet.topology.nodes import (
    BranchNode,
    FilterNode,
    FlatMapNode,
    MapNode,
    MergeNode,
    Node,
    PeekNode,
    ProcessNode,
    SinkNode,
    SourceNode,
    StartPosition,
)

if TYPE_CHECKING:
    from kstreamlet.app import App
    from kstreamlet.runtime.context import ProcessorContext


class Stream:
    """A stream of records (key, value, timestamp)."""

    def __init__(self, app: "App", node: Node, key_serde: Serde[Any], value_serde: Serde[Any],
                 attach: Callable[[Node], Node] | None = None) -> None:
        self._app = app
        self._node = node
        #: Serdes used by ``to`` / ``key_by`` when none are given (inherited from the source).
        self.key_serde = key_serde
        self.value_serde = value_serde
        # How a new child hangs off this stream (side outputs and branches attach differently).
        self._attach = attach or node.add_child

    def _then(self, node: Node, key_serde: Serde[Any] | None = None, value_serde: Serde[Any] | None = None) -> "Stream":
        self._attach(node)
        return Stream(self._app, node, key_serde or self.key_serde, value_serde or self.value_serde)

    def map(self, fn: Callable[[Any], Any], name: str | None = None) -> "Stream":
        """``value -> new value``; key and timestamp are kept."""
        return self._then(MapNode(fn, name))

    def filter(self, predicate: Callable[[Any], bool], name: str | None = None) -> "Stream":
        """Keep the records whose value satisfies ``predicate``."""
        return self._then(FilterNode(predicate, name))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], name: str | None = None) -> "Stream":
        """``value -> iterable of values``; each keeps the input's key and timestamp."""
        return self._then(FlatMapNode(fn, name))

    def peek(self, fn: Callable[[Any, Any], None], name: str | None = None) -> "Stream":
        """Call ``fn(key, value)`` for its side effect; the record passes unchanged."""
        return self._then(PeekNode(fn, name))

    def process(self, fn: Callable[[Any, "ProcessorContext"], None], name: str | None = None) -> "Stream":
        """The low-level operator: ``fn(value, ctx)`` may emit any number of records with
        ``ctx.emit(value, key=..., timestamp=...)`` and divert with ``ctx.side_output(tag, value)``.
        ``ctx`` also gives ``key``, ``timestamp``, ``topic``, ``partition``, ``offset``, ``headers``.
        """
        return self._then(ProcessNode(fn, name))

    def side_output(self, tag: str) -> "Stream":
        """The records a preceding ``process`` sent with ``ctx.side_output(tag, ...)``."""
        node = self._node
        if not isinstance(node, ProcessNode):
            raise TypeError("side_output() is only available on the stream returned by process()")
        placeholder = MergeNode(name=f"side-{tag}-{node.id}")
        node.add_side_child(tag, placeholder)
        return Stream(self._app, placeholder, self.key_serde, self.value_serde)

    def branch(self, *predicates: Callable[[Any], bool], default: bool = True) -> list["Stream"]:
        """Split by predicates; a record goes to the first branch it matches. With ``default``
        a last stream receives what no predicate took.

        >>> # evens, odds = numbers.branch(lambda n: n % 2 == 0)
        """
        preds: list[Callable[[Any], bool] | None] = list(predicates) + ([None] if default else [])
        node = BranchNode(preds)
        self._attach(node)
        out = []
        for i in range(len(preds)):
            head = MergeNode(name=f"branch-{node.id}-{i}")
            node.add_branch_child(i, head)
            out.append(Stream(self._app, head, self.key_serde, self.value_serde))
        return out

    def merge(self, *others: "Stream", name: str | None = None) -> "Stream":
        """One stream with the records of all; inputs from different topics must be
        co-partitioned (same partition count), and a task processes them by timestamp."""
        node = MergeNode(name)
        self._attach(node)
        for o in others:
            o._attach(node)
        return Stream(self._app, node, self.key_serde, self.value_serde)

    def key_by(self, fn: Callable[[Any], Any], key_serde: Serde[Any] | str | None = None,
               value_serde: Serde[Any] | str | None = None, partitions: int | None = None,
               name: str | None = None) -> "Stream":
        """Re-key by ``fn(value)`` and repartition through an internal topic
        ``<application_id>-<name>-repartition``, so all records of a key meet in one task.
        The key serde defaults to JSON (str, int, lists), the value serde to the stream's.
        """
        ks = _serdes.resolve(key_serde, _serdes.JSON)
        vs = _serdes.resolve(value_serde, self.value_serde)
        topic = self._app._repartition_topic(name, partitions)
        self._attach(SinkNode(topic, ks, vs, key_fn=fn, internal=True, name=f"key_by-{topic}"))
        source = SourceNode(topic, ks, vs, StartPosition("earliest"), internal=True, partitions=partitions)
        self._app._register_source(source)
        return Stream(self._app, source, ks, vs)

    def to(self, topic: str, key_serde: Serde[Any] | str | None = None, value_serde: Serde[Any] | str | None = None,
           partitioner: Callable[[Any, Any, int], int] | None = None, name: str | None = None) -> None:
        """Write to ``topic`` (which must exist). Without a ``partitioner(key, value, n)`` the
        partition is murmur2 of the serialized key, as in Kafka's Java clients."""
        ks = _serdes.resolve(key_serde, self.key_serde)
        vs = _serdes.resolve(value_serde, self.value_serde)
        self._attach(SinkNode(topic, ks, vs, partitioner=partitioner, name=name))

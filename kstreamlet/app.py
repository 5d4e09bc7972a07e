"""The application: its settings and a :class:`~kstreamlet.topology.builder.TopologyBuilder` the streams are
defined in, and how it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from kstreamlet import serdes as _serdes
from kstreamlet.config import Settings, resolve_settings
from kstreamlet.dsl.broadcast import BroadcastStream
from kstreamlet.dsl.joins import Table
from kstreamlet.dsl.stream import KeyedStream, Stream
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.serdes import Serde
from kstreamlet.sources.base import Source
from kstreamlet.topology.builder import Topology, TopologyBuilder
from kstreamlet.topology.nodes import SourceNode, StartPosition

if TYPE_CHECKING:
    from kstreamlet.query import StoreQuery


class App:
    """A kstreamlet service: one consumer-group member per process.

    Settings: keyword arguments are the app's own values; ``KSTREAMLET_*`` environment
    variables (the deployment) override them, and :meth:`configure` / CLI flags override both
    (see :mod:`kstreamlet.config`). Invalid or unknown ones raise ``ConfigError`` naming the
    field (with "did you mean" for a misspelt keyword).

    Example::

        from kstreamlet import App, serdes

        app = App(application_id="upper", processing_guarantee="exactly_once")
        app.stream("in", value_serde=serdes.STR).map(str.upper).to("out")

        if __name__ == "__main__":
            app.run()
    """

    def __init__(self, application_id: str | None = None, **settings: Any) -> None:
        self._code: dict[str, Any] = {k: v for k, v in {"application_id": application_id, **settings}.items()
                                      if v is not None}
        self._overrides: dict[str, tuple[Any, str]] = {}
        self.settings: Settings = resolve_settings(self._code, self._overrides)
        #: What the streams defined on this app register (sources, internal topics, names, ...).
        self.builder = TopologyBuilder(self.settings.application_id)

    def configure(self, _source: str = "configure()", **settings: Any) -> "App":
        """Override settings for this run (e.g. bootstrap servers in tests); re-validated.

        These beat ``KSTREAMLET_*`` variables and values given to ``App(...)``; the CLI passes
        its flags this way (``_source`` = ``"flag --bootstrap-servers"``, shown in the start-up
        log). None leaves a setting as it is."""
        overrides = dict(self._overrides)
        overrides.update({k: (v, _source) for k, v in settings.items() if v is not None})
        self.settings = resolve_settings(self._code, overrides)
        self._overrides = overrides
        self.builder.application_id = self.settings.application_id
        return self

    # --- defining streams ------------------------------------------------------------------------

    def stream(self, topic: str, key_serde: Serde[Any] | str | None = None, value_serde: Serde[Any] | str | None = None,
               start: StartPosition | str | Mapping[int, int] | None = None, override_committed: bool = False,
               watermarks: WatermarkStrategy | None = None) -> Stream:
        """A stream reading ``topic``.

        ``start``: ``"group"`` (default: the group's committed offset, else
        ``auto_offset_reset``), ``"earliest"``, ``"latest"``, ``{partition: offset}`` or
        ``StartPosition.from_timestamp(ms)``. Committed offsets win over ``start`` once the
        group has them, unless ``override_committed=True``.

        ``watermarks``: a :class:`~kstreamlet.eventtime.WatermarkStrategy` (event-time
        assigner, out-of-orderness, idleness); default monotonous record timestamps.
        """
        ks = _serdes.resolve(key_serde, _serdes.BYTES)
        vs = _serdes.resolve(value_serde, _serdes.BYTES)
        node = SourceNode(topic, ks, vs, StartPosition.parse(start, override_committed), watermarks=watermarks)
        self.builder.add_source(node)
        return Stream(self.builder, node, ks, vs, watermarks=watermarks)

    def source(self, source: Source | Callable[[], Iterable[Any]], name: str,
               value_serde: Serde[Any] | str | None = None, key_serde: Serde[Any] | str | None = None,
               partitions: int = 1, watermarks: WatermarkStrategy | None = None) -> Stream:
        """A stream fed by a custom source (see :mod:`kstreamlet.sources.base` for the guarantee).

        Its records pass through the internal topic ``<application_id>-source-<name>``, with the
        timestamp given to ``ctx.collect`` (default: the time of collection) as record timestamp;
        ``watermarks`` makes it an event-time input as for :meth:`stream`.
        """
        self.builder.check_name(name)
        ks = _serdes.resolve(key_serde, _serdes.BYTES)
        vs = _serdes.resolve(value_serde, _serdes.JSON)
        topic = self.builder.add_custom_source(name, source, ks, vs, partitions)
        node = SourceNode(topic, ks, vs, StartPosition("earliest"), internal=True, partitions=partitions,
                          watermarks=watermarks)
        self.builder.add_source(node)
        return Stream(self.builder, node, ks, vs, watermarks=watermarks)

    def table(self, topic: str, key_serde: Serde[Any] | str | None = None, value_serde: Serde[Any] | str | None = None,
              name: str | None = None) -> Table:
        """A table (latest value per key) materialized from a compacted topic, for ``join_table``.
        The topic must be keyed by the join key and co-partitioned with the joining stream."""
        ks = _serdes.resolve(key_serde, _serdes.BYTES)
        vs = _serdes.resolve(value_serde, _serdes.BYTES)
        node = SourceNode(topic, ks, vs, StartPosition("earliest"))
        self.builder.add_source(node)
        return Table(topic, KeyedStream(self.builder, node, ks, vs), name or topic.replace("/", "-"))

    def broadcast(self, topic: str | None = None, value_serde: Serde[Any] | str | None = None,
                  key_serde: Serde[Any] | str | None = None, source: Any = None,
                  name: str | None = None) -> BroadcastStream:
        """A broadcast stream: every instance receives every element (Flink's ``broadcast()``).

        From a topic, or from a (polling) ``source`` whose records go through the compacted
        internal topic ``<application_id>-broadcast-<name>``. Connect it with ``stream.connect(b)``.
        """
        ks = _serdes.resolve(key_serde, _serdes.BYTES)
        vs = _serdes.resolve(value_serde, _serdes.JSON if source is not None else _serdes.BYTES)
        if (topic is None) == (source is None):
            raise ValueError("app.broadcast() needs exactly one of topic= or source=")
        if source is not None:
            if not name:
                raise ValueError("a broadcast source needs a name (it names its internal topic)")
            self.builder.check_name(name)
            topic = self.builder.add_broadcast_source(name, source, ks, vs)
        assert topic is not None
        b = BroadcastStream(topic, ks, vs)
        self.builder.add_broadcast(b)
        return b

    # --- running ------------------------------------------------------------------------------------

    def topology(self) -> Topology:
        """Build (once) and return the topology; raises TopologyError if it cannot run."""
        return self.builder.build()

    def describe(self, format: str = "text") -> Any:
        """The topology as Kafka Streams' ``Topology#describe()`` prints it (sub-topologies,
        sources, processors with their stores, sinks) plus internal topics, broadcast inputs and
        custom sources. ``format``: ``"text"`` (a str), ``"mermaid"`` (a flowchart, str) or
        ``"json"`` (a dict). Needs no broker; builds the topology."""
        from kstreamlet.topology.describe import describe

        return describe(self.topology(), self.settings.application_id, format, self.settings)

    def query(self, store: str) -> "StoreQuery":
        """Interactive queries of ``store`` (a store name, or an operator with one store) from
        inside the process running this app: ``get(key)``, ``range(from, to)``, ``all()`` and, for
        window stores, ``fetch(key, time_from, time_to)`` over committed state, routed to the
        instance owning each key (docs/operations.md, "Interactive queries")."""
        from kstreamlet.query import store_query

        return store_query(self.settings.application_id, store)

    def run(self, workers: int = 1) -> int:
        """Join the group and process until SIGTERM/SIGINT. Returns the exit code."""
        from kstreamlet.runtime.runner import run_app

        return run_app(self, workers)

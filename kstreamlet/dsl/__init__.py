"""The stream DSL: handles (:class:`~kstreamlet.dsl.stream.Stream`, ``KeyedStream``) and the builders
of joins, windows and broadcast connections. They write into a
:class:`~kstreamlet.topology.builder.TopologyBuilder`; the operators they configure are in
:mod:`kstreamlet.operators`."""

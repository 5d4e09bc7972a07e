"""The processor graph (:mod:`~kstreamlet.topology.nodes`), the builder the DSL writes into and the
built :class:`~kstreamlet.topology.builder.Topology` (:mod:`~kstreamlet.topology.builder`)."""

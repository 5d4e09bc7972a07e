"""State: stores and backends, keyed state (:mod:`~kstreamlet.state.keyed`), the byte layouts of
store entries (:mod:`~kstreamlet.state.codec`) and changelog recovery."""

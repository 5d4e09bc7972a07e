"""Operators the DSL configures, written as keyed process functions over keyed state and timers:
windows (:mod:`~kstreamlet.operators.window`), joins (:mod:`~kstreamlet.operators.joins`),
running aggregations (:mod:`~kstreamlet.operators.aggregate`) and the broadcast side
(:mod:`~kstreamlet.operators.broadcast`)."""

"""Stateful word count (the seed's Kafka → Kafka exactly-once example) for process-level tests.

Env: ``IN_TOPIC`` (lines), ``OUT_TOPIC`` (word → running count, INT64), ``KSTREAMLET_*``.
"""

import os

from kstreamlet import App, serdes

app = App()
(
    app.stream(os.environ["IN_TOPIC"], value_serde=serdes.STR)
    .flat_map(str.split)
    .key_by(lambda w: w, key_serde=serdes.STR, name="words")
    .count(name="counts")
    .to(os.environ["OUT_TOPIC"], value_serde=serdes.INT64)
)

"""A test service for interactive queries (tests/integration/test_queries.py).

Input values ``"<key>:<n>"`` (``IN_TOPIC``), keyed by ``<key>`` (repartition ``by-key``):
``counts-value`` (the running count per key, also written to ``OUT_TOPIC`` so a test knows
when it is committed) and ``hourly-windows`` (per key and event-time hour, the count).
"""

import os

from kstreamlet import App, TumblingEventTimeWindows, serdes

app = App()

keyed = app.stream(os.environ["IN_TOPIC"], value_serde=serdes.STR).key_by(
    lambda v: v.partition(":")[0], key_serde=serdes.STR, name="by-key")
keyed.count(name="counts").to(os.environ["OUT_TOPIC"], value_serde=serdes.INT64)
keyed.window(TumblingEventTimeWindows.of(3_600_000)).count(name="hourly")

"""A test service with one store of each decodable kind, for ``kstreamlet state``.

Input values ``"<key>:<item>"`` (``IN_TOPIC``), keyed by ``<key>`` (repartition ``by-key``):

- ``remember-seen`` (list state): the key's items in order;
- ``remember-per-item`` (map state): item -> how often it came;
- ``remember-last`` (value state with TTL): the last item;
- ``hourly-windows`` (window store): per key and event-time hour, the count of records;
  ``hourly-timers`` (its timers).

The per-item counts also go to ``OUT_TOPIC`` (JSON), so a test knows when they are committed.
"""

import os

from kstreamlet import (
    App,
    KeyedProcessFunction,
    ListStateDescriptor,
    MapStateDescriptor,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    serdes,
)
from kstreamlet.state.keyed import StateTtlConfig

app = App()


class Remember(KeyedProcessFunction):
    def open(self, ctx):  # type: ignore[no-untyped-def]
        self.seen = ctx.get_list_state(ListStateDescriptor("seen", serdes.STR))
        self.per_item = ctx.get_map_state(MapStateDescriptor("per-item", serdes.STR, serdes.INT64))
        self.last = ctx.get_state(ValueStateDescriptor("last", serdes.STR, ttl=StateTtlConfig(86400)))

    def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
        item = value.partition(":")[2]
        self.seen.add(item)
        n = self.per_item.get(item, 0) + 1
        self.per_item.put(item, n)
        self.last.update(item)
        ctx.emit({"item": item, "n": n})


keyed = app.stream(os.environ["IN_TOPIC"], value_serde=serdes.STR).key_by(
    lambda v: v.partition(":")[0], key_serde=serdes.STR, name="by-key")
keyed.process(Remember(), name="remember").to(os.environ["OUT_TOPIC"], value_serde=serdes.JSON)
keyed.window(TumblingEventTimeWindows.of(3_600_000)).count(name="hourly")

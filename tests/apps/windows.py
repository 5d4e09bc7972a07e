"""Event-time windowed sum and interval join, for process-level exactly-once tests.

Env: ``EVENTS_TOPIC`` (JSON ``{"k", "ts", "v"}``), ``CLICKS_TOPIC`` (JSON ``{"k", "ts", "id"}``),
``SUMS_TOPIC`` (``"k|window_end|sum"``), ``JOINED_TOPIC`` (``"event_id|click_id"``).
"""

import os

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.windowing import TumblingEventTimeWindows

class Sum:
    def create_accumulator(self):
        return 0

    def add(self, event, acc):
        return acc + event["v"]

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


app = App()
wm = (WatermarkStrategy.for_bounded_out_of_orderness(100)
      .with_timestamp_assigner(lambda v: v["ts"]).with_idleness(2000))
events = app.stream(os.environ["EVENTS_TOPIC"], value_serde=serdes.JSON, watermarks=wm)
clicks = app.stream(os.environ["CLICKS_TOPIC"], value_serde=serdes.JSON, watermarks=wm)

(events.key_by(lambda e: e["k"], key_serde=serdes.STR, name="events-by-k")
    .window(TumblingEventTimeWindows.of(500))
    .aggregate(Sum(), name="sums", window_fn=lambda key, w, total, out: out(f"{key}|{w.end}|{total}"))
    .to(os.environ["SUMS_TOPIC"], value_serde=serdes.STR))

(events.key_by(lambda e: e["k"], key_serde=serdes.STR, name="join-events")
    .interval_join(clicks.key_by(lambda c: c["k"], key_serde=serdes.STR, name="join-clicks"))
    .between(-50, 50)
    .apply(lambda e, c: f"{e['id']}|{c['id']}", output_serde=serdes.STR, name="joined")
    .to(os.environ["JOINED_TOPIC"], value_serde=serdes.STR))

"""Per-user click counts in 1-minute event-time windows after ``key_by``, idleness 10 s.

Value JSON ``{"user", "ts", "kind"}``; only ``kind == "click"`` counts; output value
``"user|window_end|count"``. Env: ``IN_TOPIC``, ``OUT_TOPIC``, ``IDLENESS_MS`` (default 10000).
"""

import os

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.windowing import TumblingEventTimeWindows


class Count:
    def create_accumulator(self):
        return 0

    def add(self, click, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


app = App()
wm = (WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda c: c["ts"])
      .with_idleness(int(os.environ.get("IDLENESS_MS", "10000"))))
(app.stream(os.environ["IN_TOPIC"], value_serde=serdes.JSON, watermarks=wm)
    .filter(lambda c: c["kind"] == "click")
    .key_by(lambda c: c["user"], key_serde=serdes.STR, name="by-user")
    .window(TumblingEventTimeWindows.of(60_000))
    .aggregate(Count(), name="per-minute", window_fn=lambda key, w, n, out: out(f"{key}|{w.end}|{n}"))
    .to(os.environ["OUT_TOPIC"], value_serde=serdes.STR))

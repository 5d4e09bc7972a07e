"""Event-time timers service: value ``{"k": key, "ts": event time, "fire_at": ms}`` registers a
timer for ``fire_at``; firing emits ``"<key>@<ts>"``. Env: ``IN_TOPIC``, ``OUT_TOPIC``."""

import os

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.functions import KeyedProcessFunction


class Timers(KeyedProcessFunction):
    def process_element(self, value, ctx):
        if value.get("fire_at") is not None:
            ctx.timers.register_event_time(value["fire_at"])

    def on_timer(self, ts, ctx):
        ctx.emit(f"{ctx.key}@{ts}")


app = App()
(
    app.stream(os.environ["IN_TOPIC"], key_serde=serdes.STR, value_serde=serdes.JSON,
               watermarks=WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda v: v["ts"]))
    .keyed()
    .process(Timers(), name="timers")
    .to(os.environ["OUT_TOPIC"], value_serde=serdes.STR)
)

"""Event-time timers service: value ``{"k": key, "ts": event time, "fire_at": ms}`` registers a
timer for ``fire_at``; firing emits ``"<key>@<ts>"``. Env: ``IN_TOPIC``, ``OUT_TOPIC``;
``FAIL_TIMER_KEY`` (a planted bug, removed by restarting without it): the timer of that key
emits, then raises — nothing it emitted may become visible; ``OUT_OF_ORDERNESS_MS`` and
``IDLENESS_MS`` (default: monotonous, no idleness): with both, timers fire from the
processing-time tick once the input is idle rather than from a record."""

import os

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet import KeyedProcessFunction

FAIL_KEY = os.environ.get("FAIL_TIMER_KEY")


class Timers(KeyedProcessFunction):
    def process_element(self, value, ctx):
        if value.get("fire_at") is not None:
            ctx.timers.register_event_time(value["fire_at"])

    def on_timer(self, ts, ctx):
        ctx.emit(f"{ctx.key}@{ts}")
        if ctx.key == FAIL_KEY:
            raise RuntimeError(f"planted bug in the timer of {ctx.key}")


wm = WatermarkStrategy.for_bounded_out_of_orderness(int(os.environ.get("OUT_OF_ORDERNESS_MS", "0")))
if os.environ.get("IDLENESS_MS"):
    wm = wm.with_idleness(int(os.environ["IDLENESS_MS"]))

app = App()
(
    app.stream(os.environ["IN_TOPIC"], key_serde=serdes.STR, value_serde=serdes.JSON,
               watermarks=wm.with_timestamp_assigner(lambda v: v["ts"]))
    .keyed()
    .process(Timers(), name="timers")
    .to(os.environ["OUT_TOPIC"], value_serde=serdes.STR)
)

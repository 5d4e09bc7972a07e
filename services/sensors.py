"""Sensors: the seed's random-walk source, per-sensor windowed min/max, and a rising-temperature alert.

Readings ``{"id", "timestamp", "temperature"}`` (the seed's ``SensorDataModel``) come from
``SENSORS_TOPIC`` or, when it is unset, from :class:`SensorSource` — the seed's custom
source (000): ten sensors ``sensor_1..10`` starting at Gaussian noise × 20 and taking a
random-walk step (Gaussian × 0.5) each round; one reading every 200 ms, stamped with the
current time. Event time is the reading's ``timestamp``.

Outputs (JSON):

- ``STATS_TOPIC``: per sensor and tumbling event-time window (``SENSORS_WINDOW_MS``,
  default 10 s): ``{"id", "windowStart", "windowEnd", "min", "max", "count"}``, emitted
  once when the window closes (the watermark trails by ``SENSORS_OUT_OF_ORDERNESS_MS``;
  an idle input stops holding it back after ``SENSORS_IDLENESS_MS``);
- ``ALERTS_TOPIC``: ``{"id", "since", "at", "from", "to"}`` when a sensor's temperature
  has risen with every reading for ``SENSORS_ALERT_MS`` of event time (default 5 s) — a
  :class:`~kstreamlet.KeyedProcessFunction` with keyed state and an event-time
  timer, deleted as soon as a reading does not rise (seed 003, ``KeyedProcessFunction``).

Run::

    export KSTREAMLET_BOOTSTRAP_SERVERS=localhost:9092 KSTREAMLET_APPLICATION_ID=sensors
    export STATS_TOPIC=sensor-stats ALERTS_TOPIC=sensor-alerts
    export SENSORS_TOPIC=sensor-readings      # omit to generate readings
    kstreamlet run services.sensors:app
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from kstreamlet import (
    App,
    KeyedContext,
    KeyedProcessFunction,
    RuntimeContext,
    Source,
    SourceContext,
    TumblingEventTimeWindows,
    ValueStateDescriptor,
    WatermarkStrategy,
    serdes,
)
from services._env import integer, required


class SensorSource(Source):
    """The seed's ``SensorSource``: a random walk per sensor, one reading every ``pause`` s."""

    def __init__(self, sensors: int = 10, pause: float = 0.2, seed: int | None = None) -> None:
        self.sensors, self.pause, self.seed = sensors, pause, seed
        self.running = True

    def run(self, ctx: SourceContext) -> None:
        rnd = random.Random(self.seed)
        temps = [(f"sensor_{i}", rnd.gauss(0, 1) * 20) for i in range(1, self.sensors + 1)]
        while self.running:
            temps = [(sid, t + rnd.gauss(0, 1) * 0.5) for sid, t in temps]
            now = int(time.time() * 1000)
            for sid, t in temps:
                if not self.running:
                    return
                ctx.collect({"id": sid, "timestamp": now, "temperature": t}, key=sid, timestamp=now)
                time.sleep(self.pause)

    def cancel(self) -> None:
        self.running = False


class MinMax:
    """Incremental window aggregate: (min, max, count) of the temperatures."""

    def create_accumulator(self) -> list[Any]:
        return [None, None, 0]

    def add(self, r: dict[str, Any], acc: list[Any]) -> list[Any]:
        t = r["temperature"]
        lo, hi, n = acc
        return [t if lo is None or t < lo else lo, t if hi is None or t > hi else hi, n + 1]

    def get_result(self, acc: list[Any]) -> list[Any]:
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        los = [x for x in (a[0], b[0]) if x is not None]
        his = [x for x in (a[1], b[1]) if x is not None]
        return [min(los) if los else None, max(his) if his else None, a[2] + b[2]]


def window_stats(key: str, w: Any, acc: list[Any], out: Any) -> None:
    out({"id": key, "windowStart": w.start, "windowEnd": w.end, "min": acc[0], "max": acc[1], "count": acc[2]})


class RisingTemperatureAlert(KeyedProcessFunction):
    """Alert when every reading of a sensor rose for ``duration_ms`` of event time."""

    def __init__(self, duration_ms: int) -> None:
        self.duration_ms = duration_ms

    def open(self, ctx: RuntimeContext) -> None:
        self.last = ctx.get_state(ValueStateDescriptor("last", serdes.JSON))    # previous temperature
        self.rising = ctx.get_state(ValueStateDescriptor("rising", serdes.JSON))  # [since_ts, from_temp, timer]

    def process_element(self, r: dict[str, Any], ctx: KeyedContext) -> None:
        prev, rising = self.last.value(), self.rising.value()
        t, ts = r["temperature"], r["timestamp"]
        self.last.update(t)
        if prev is None:
            return
        if t > prev:
            if rising is None:
                timer = ts + self.duration_ms
                ctx.timers.register_event_time(timer)
                self.rising.update([ts, prev, timer])
        elif rising is not None:
            ctx.timers.delete_event_time(rising[2])
            self.rising.clear()

    def on_timer(self, ts: int, ctx: KeyedContext) -> None:
        rising = self.rising.value()
        if rising is None or rising[2] != ts:
            return
        ctx.emit({"id": ctx.key, "since": rising[0], "at": ts, "from": rising[1], "to": self.last.value()})
        self.rising.clear()




app = App(application_id=None if os.environ.get("KSTREAMLET_APPLICATION_ID") else "sensors")
wm = (WatermarkStrategy.for_bounded_out_of_orderness(integer("SENSORS_OUT_OF_ORDERNESS_MS", 500))
      .with_timestamp_assigner(lambda r: r["timestamp"]).with_idleness(integer("SENSORS_IDLENESS_MS", 5000)))
if os.environ.get("SENSORS_TOPIC"):
    readings = app.stream(os.environ["SENSORS_TOPIC"], value_serde=serdes.JSON, watermarks=wm)
else:
    readings = app.source(SensorSource(), name="readings", value_serde=serdes.JSON, key_serde=serdes.STR, watermarks=wm)
by_sensor = readings.key_by(lambda r: r["id"], key_serde=serdes.STR, name="by-sensor")
(by_sensor.window(TumblingEventTimeWindows.of(integer("SENSORS_WINDOW_MS", 10_000)))
    .aggregate(MinMax(), name="min-max", window_fn=window_stats)
    .to(required("STATS_TOPIC"), value_serde=serdes.JSON))
(by_sensor.process(RisingTemperatureAlert(integer("SENSORS_ALERT_MS", 5000)), name="rising-alert")
    .to(required("ALERTS_TOPIC"), value_serde=serdes.JSON))

"""The keyed input the window unit tests share: topic ``in`` (STR keys, JSON values) read with
``keyed()`` and a bounded-out-of-orderness watermark, and how they pipe and read records."""

from __future__ import annotations

from typing import Any

from kstreamlet import App, serdes
from kstreamlet.eventtime import WatermarkStrategy


def keyed_app(bound_ms: int = 0, application_id: str = "win") -> tuple[App, Any]:
    app = App(application_id=application_id, bootstrap_servers="127.0.0.1:1")
    s = app.stream("in", key_serde=serdes.STR, value_serde=serdes.JSON,
                   watermarks=WatermarkStrategy.for_bounded_out_of_orderness(bound_ms))
    return app, s.keyed()


def pipe(d: Any, records: list[tuple[str, Any, int]]) -> None:
    inp = d.input_topic("in", key_serde=serdes.STR, value_serde=serdes.JSON)
    for key, value, ts in records:
        inp.pipe_input(value, key=key, timestamp=ts)


def records(d: Any, topic: str) -> list[tuple[Any, int, Any]]:
    return [(r.key, r.timestamp, r.value)
            for r in d.output_topic(topic, key_serde=serdes.STR, value_serde=serdes.JSON).read_records_to_list()]

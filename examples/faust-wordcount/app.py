"""Faust's word count (``faust_app.py``) rewritten for kstreamlet (docs/faust-migration.md).

- the agents ``shuffle_words`` + ``count_words`` (``send(key=word)`` to repartition) are
  ``flat_map`` + ``key_by`` (a repartition topic) + ``count`` (keyed state with a changelog);
- the ``word_counts`` table is the keyed state of ``count`` (store ``word_counts-...``);
- the windowed table ``hourly_counts`` is ``window(TumblingEventTimeWindows.of(1 h)).count()``;
- ``word_counts_topic.send(WordCount(...))`` is ``.to("word-counts", value_serde=faust_record(WordCount))``
  (the same bytes Faust writes, so Faust consumers keep reading the topic);
- ``@app.timer(interval=60.0)`` is a processing-time timer of a keyed function (:class:`Report`).

Run (the topics must exist)::

    cd examples/faust-wordcount && kstreamlet run app:app

Tested broker-free with the TopologyTestDriver: tests/unit/test_faust_migration.py.
"""

from __future__ import annotations

import faust

from kstreamlet import App, KeyedProcessFunction, TumblingEventTimeWindows, ValueStateDescriptor, serdes
from kstreamlet.serdes_faust import faust_record

HOUR_MS = 3_600_000
REPORT_EVERY_MS = 60_000


class WordCount(faust.Record, serializer="json"):
    word: str
    count: int


class Report(KeyedProcessFunction):
    """Faust's ``@app.timer(interval=60.0)``: every minute (processing time), per word seen since the
    last report, emit its running count. kstreamlet's timers are per key, exactly-once and survive
    restarts (they are state); a global periodic job is a timer on a constant key (``keyed()`` after
    ``key_by(lambda _: "all")``)."""

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", serdes.INT64))
        self.timer = ctx.get_state(ValueStateDescriptor("timer", serdes.INT64))

    def process_element(self, count, ctx):
        self.count.update(count)
        if self.timer.value() is None:
            t = ctx.timers.current_processing_time() + REPORT_EVERY_MS
            ctx.timers.register_processing_time(t)
            self.timer.update(t)

    def on_timer(self, ts, ctx):
        self.timer.clear()
        ctx.emit(f"{ctx.key}: {self.count.value()}")


app = App(application_id="faust-wordcount")

words = (app.stream("posts", value_serde=serdes.STR)
         .flat_map(str.split)
         .key_by(lambda w: w, key_serde=serdes.STR, value_serde=serdes.STR, name="words"))

counts = words.count(name="word_counts")
(counts.process(lambda n, ctx: ctx.emit(WordCount(word=ctx.key, count=n)))
       .to("word-counts", value_serde=faust_record(WordCount)))

words.window(TumblingEventTimeWindows.of(HOUR_MS)).count(name="hourly_counts").to(
    "hourly-counts", value_serde=serdes.INT64)

counts.keyed().process(Report(), name="report").to("reports", value_serde=serdes.STR)

if __name__ == "__main__":
    app.run()

"""A small service: generated sentences → words, repartitioned by word (exactly-once).

Env: ``WORDS_TOPIC`` (output, must exist) and the usual ``KSTREAMLET_*`` settings.

    kstreamlet run services.sentences:app
"""

from __future__ import annotations

import os
import random
import time

from kstreamlet import App, Source, SourceContext, serdes

SENTENCES = [
    "to be or not to be that is the question",
    "the quick brown fox jumps over the lazy dog",
    "exactly once is a property of the whole pipeline",
    "streams and tables are two sides of the same coin",
]


class SentenceSource(Source):
    """Emits a random sentence every few milliseconds until cancelled."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.running = True

    def run(self, ctx: SourceContext) -> None:
        rnd = random.Random(42 + ctx.index)
        while self.running:
            ctx.collect(rnd.choice(SENTENCES))
            time.sleep(self.interval)

    def cancel(self) -> None:
        self.running = False


app = App(application_id=os.environ.get("KSTREAMLET_APPLICATION_ID", "sentences"))
(
    app.source(SentenceSource(), name="sentences", value_serde=serdes.STR)
    .flat_map(str.split)
    .key_by(lambda w: w, key_serde=serdes.STR, name="by-word")
    .to(os.environ.get("WORDS_TOPIC", "words"))
)

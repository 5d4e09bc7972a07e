"""Stateful word count, Kafka → Kafka, exactly once: the seed's end-to-end example.

Reads text lines from ``IN_TOPIC``, splits them into words, repartitions by word (topic
``<application_id>-words-repartition``), counts each word in RocksDB-backed keyed state
with a changelog (``<application_id>-counts-changelog``) and writes every updated count
to ``OUT_TOPIC`` (key = the word, UTF-8; value = the running count, 8-byte big-endian
int64 — ``serdes.INT64``). Under ``exactly_once`` (the default) a ``read_committed``
reader sees each input line counted once, across crashes, restarts and rebalances.

Run (the topics must exist; partitions of ``IN_TOPIC`` are the unit of scaling)::

    export KSTREAMLET_BOOTSTRAP_SERVERS=localhost:9092 KSTREAMLET_APPLICATION_ID=wordcount
    export IN_TOPIC=lines OUT_TOPIC=word-counts
    kstreamlet run services.wordcount:app          # start more replicas to scale out

Environment (besides ``KSTREAMLET_*``, see :mod:`kstreamlet.config`):

``IN_TOPIC``          input lines (required)
``OUT_TOPIC``         word → count (required)
``WORDCOUNT_LOWER``   ``1``: count case-insensitively (default ``0``)
"""

from __future__ import annotations

import os

from kstreamlet import App, serdes
from services._env import required


def words(line: str) -> list[str]:
    return line.split()


def lower_words(line: str) -> list[str]:
    return line.lower().split()


app = App(application_id=None if os.environ.get("KSTREAMLET_APPLICATION_ID") else "wordcount")
(
    app.stream(required("IN_TOPIC"), value_serde=serdes.STR)
    .flat_map(lower_words if os.environ.get("WORDCOUNT_LOWER", "0") == "1" else words)
    .key_by(lambda w: w, key_serde=serdes.STR, name="words")
    .count(name="counts")
    .to(required("OUT_TOPIC"), value_serde=serdes.INT64)
)

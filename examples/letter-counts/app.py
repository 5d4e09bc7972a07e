"""letter-counts: a user's own kstreamlet app, kept outside the library (only ``import kstreamlet``).

Reads words (one per record, UTF-8) from ``IN_TOPIC`` (default ``words``), counts them per first
letter in keyed state (RocksDB, with a changelog) and writes every updated count to ``OUT_TOPIC``
(default ``letter-counts``; key = the letter, value = the running count as 8-byte big-endian int64,
``serdes.INT64``), exactly once.

How it is packaged and run:

* ``Dockerfile`` next to this file: ``FROM kstreamlet:latest`` + ``COPY app.py /app/`` +
  ``CMD ["app:app"]``; ``docker/docker-compose.yml`` builds it and runs it on the ``words`` that
  the ``sentences`` service writes.
* ``tests/integration/test_packaging.py`` installs kstreamlet's wheel into a fresh virtualenv, copies
  this file into a temporary directory outside the repository and runs it there on a real broker.

By hand::

    export KSTREAMLET_BOOTSTRAP_SERVERS=localhost:9092
    kstreamlet topics create app:app --partitions 3   # the missing source and sink topics
    kstreamlet run app:app
"""

from __future__ import annotations

import os

from kstreamlet import App, serdes


def first_letter(word: str) -> str:
    return word[:1].lower()


app = App(application_id="letter-counts", processing_guarantee="exactly_once", commit_interval=0.5)
(
    app.stream(os.environ.get("IN_TOPIC", "words"), value_serde=serdes.STR)
    .filter(bool)
    .key_by(first_letter, key_serde=serdes.STR, name="by-letter")
    .count(name="counts")
    .to(os.environ.get("OUT_TOPIC", "letter-counts"), value_serde=serdes.INT64)
)

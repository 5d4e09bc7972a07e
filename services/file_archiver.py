"""Kafka → files, exactly once: archive a topic's lines into hourly buckets (the seed's
``StreamFileSinkDemo``, with Kafka instead of a socket).

Every record value of ``IN_TOPIC`` becomes one line (or one JSON/CSV row, or one Parquet
row) under ``ARCHIVE_PATH/<yyyy-MM-dd--HH>/part-<partition>-<counter>``. Part files are
written hidden (``.part-0-3.inprogress``), rolled by size / age / inactivity into
``.part-0-3.pending``, and renamed to ``part-0-3`` only after the checkpoint that contains
them committed in Kafka — readers that skip dot files never see partial or duplicated data
(see :mod:`kstreamlet.sinks.files`).

Run::

    export KSTREAMLET_BOOTSTRAP_SERVERS=localhost:9092 KSTREAMLET_APPLICATION_ID=archiver
    export IN_TOPIC=lines ARCHIVE_PATH=/data/archive
    kstreamlet run services.file_archiver:app

Environment (besides ``KSTREAMLET_*``, see :mod:`kstreamlet.config`):

``IN_TOPIC``                    input topic (required; must exist)
``ARCHIVE_PATH``                base directory or fsspec URL (required)
``ARCHIVE_FORMAT``              ``text`` (default: the value as a line), ``jsonl``, ``csv``
                                (JSON object values; ``ARCHIVE_CSV_COLUMNS=a,b``) or ``parquet``
``ARCHIVE_BUCKET_FORMAT``       Java date pattern (default ``yyyy-MM-dd--HH``); ``""`` = no buckets
``ARCHIVE_TZ``                  time zone of bucket names (default ``UTC``)
``ARCHIVE_EVENT_TIME``          ``1``: bucket by record timestamp instead of processing time
``ARCHIVE_MAX_PART_BYTES``      roll at this size (default 128 MiB)
``ARCHIVE_ROLLOVER_SECONDS``    roll files open this long (default 60)
``ARCHIVE_INACTIVITY_SECONDS``  roll files idle this long (default 60)
``ARCHIVE_ON_CHECKPOINT``       ``1``: roll at every checkpoint instead
``ARCHIVE_PREFIX`` / ``ARCHIVE_SUFFIX``  part file names (default ``part`` / none)
``ARCHIVE_FSYNC``               ``0`` to skip fsync at checkpoints (default ``1``)
"""

from __future__ import annotations

import os
from typing import Callable

from kstreamlet import App, serdes
from kstreamlet.sinks import (
    BasePathBucketAssigner,
    BulkFormat,
    CsvEncoder,
    DateTimeBucketAssigner,
    DefaultRollingPolicy,
    FileSink,
    JsonLinesEncoder,
    OnCheckpointRollingPolicy,
    OutputFileConfig,
    ParquetFormat,
    RollingPolicy,
    RowEncoder,
    TextEncoder,
)
from services._env import required


def build_sink() -> FileSink:
    """The archiver's sink, configured from the environment."""
    fmt_name = os.environ.get("ARCHIVE_FORMAT", "text")
    formats: dict[str, Callable[[], RowEncoder | BulkFormat]] = {
        "text": lambda: TextEncoder(),
        "jsonl": lambda: JsonLinesEncoder(),
        "csv": lambda: CsvEncoder(columns=[c for c in os.environ.get("ARCHIVE_CSV_COLUMNS", "").split(",") if c] or None),
        "parquet": lambda: ParquetFormat(),
    }
    if fmt_name not in formats:
        raise SystemExit(f"services.file_archiver: ARCHIVE_FORMAT must be one of {sorted(formats)}, not {fmt_name!r}")
    pattern = os.environ.get("ARCHIVE_BUCKET_FORMAT", "yyyy-MM-dd--HH")
    assigner = (DateTimeBucketAssigner(pattern, tz=os.environ.get("ARCHIVE_TZ", "UTC"),
                                       use_event_time=os.environ.get("ARCHIVE_EVENT_TIME") == "1")
                if pattern else BasePathBucketAssigner())
    policy: RollingPolicy
    if os.environ.get("ARCHIVE_ON_CHECKPOINT") == "1":
        policy = OnCheckpointRollingPolicy()
    else:
        policy = DefaultRollingPolicy(
            max_part_size=int(os.environ.get("ARCHIVE_MAX_PART_BYTES", str(128 * 1024 * 1024))),
            rollover_interval=float(os.environ.get("ARCHIVE_ROLLOVER_SECONDS", "60")),
            inactivity_interval=float(os.environ.get("ARCHIVE_INACTIVITY_SECONDS", "60")),
        )
    return FileSink(
        required("ARCHIVE_PATH"),
        formats[fmt_name](),
        bucket_assigner=assigner,
        rolling_policy=policy,
        output_file_config=OutputFileConfig(os.environ.get("ARCHIVE_PREFIX", "part"), os.environ.get("ARCHIVE_SUFFIX", "")),
        fsync=os.environ.get("ARCHIVE_FSYNC", "1") == "1",
    )


app = App(application_id=None if os.environ.get("KSTREAMLET_APPLICATION_ID") else "file-archiver")
_structured = os.environ.get("ARCHIVE_FORMAT", "text") in ("jsonl", "csv", "parquet")
app.stream(required("IN_TOPIC"), value_serde=serdes.JSON if _structured else serdes.STR).sink(build_sink(), name="archive")

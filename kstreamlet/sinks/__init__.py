"""Side sinks that commit with the app's checkpoints: two-phase commit (Flink's
``TwoPhaseCommitSinkFunction``) driven by the runtime.

``stream.sink(sink, name="...")`` attaches a sink; every task (input partition) gets its own
copy. Under ``exactly_once`` each sink's pre-commit is recorded inside the checkpoint's Kafka
transaction and committed after it (see :mod:`kstreamlet.sinks.twophase.protocol` for the
protocol and :mod:`kstreamlet.sinks.twophase.operator` for how the runtime drives it).

Built in:

* :class:`~kstreamlet.sinks.mysql.MySQLSink` — XA two-phase commit or idempotent upserts.
* :class:`~kstreamlet.sinks.files.FileSink` — bucketed part files (rows or Parquet) with
  Flink's in-progress → pending → finished lifecycle.

(The polling MySQL *source* is :class:`kstreamlet.sources.mysql.MySQLPollingSource`.)

Name the sink (``name=``): the name keys its state store and its XA transactions, so it must
stay the same across deployments.
"""

from kstreamlet.sinks.files import (
    BasePathBucketAssigner,
    BucketAssigner,
    BucketContext,
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
from kstreamlet.sinks.mysql import DEFAULT_SOURCE_COLUMNS, MySQLSink, MySQLSinkError, quote_ident
from kstreamlet.sinks.twophase import (
    RecordMetadata,
    SinkContext,
    SinkError,
    SinkUnavailableError,
    SinkWriteError,
    TwoPhaseCommitSink,
)

__all__ = [
    "TwoPhaseCommitSink", "SinkContext", "RecordMetadata", "SinkError", "SinkUnavailableError", "SinkWriteError",
    "FileSink", "OutputFileConfig", "BucketContext", "BucketAssigner", "DateTimeBucketAssigner",
    "BasePathBucketAssigner", "RollingPolicy", "DefaultRollingPolicy", "OnCheckpointRollingPolicy", "RowEncoder",
    "TextEncoder", "JsonLinesEncoder", "CsvEncoder", "BulkFormat", "ParquetFormat", "MySQLSink", "MySQLSinkError",
    "DEFAULT_SOURCE_COLUMNS", "quote_ident",
]

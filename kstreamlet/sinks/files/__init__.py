"""File sink (Flink's ``FileSink``): bucketed part files, rows or Parquet, exactly once.

- :mod:`.sink` — :class:`FileSink`, the part-file lifecycle and recovery.
- :mod:`.buckets` — bucket assigners; :mod:`.rolling` — rolling policies.
- :mod:`.formats` — part-file names and row/bulk encodings; :mod:`.parquet` — :class:`ParquetFormat`.
- :mod:`.storage` — the local/fsspec filesystem operations.

Test helpers that list a sink's output are in :mod:`kstreamlet.testing.files`.
"""

from kstreamlet.sinks.files.buckets import (
    BasePathBucketAssigner,
    BucketAssigner,
    BucketContext,
    DateTimeBucketAssigner,
    java_date_formatter,
)
from kstreamlet.sinks.files.formats import (
    BulkFormat,
    BulkWriter,
    CsvEncoder,
    JsonLinesEncoder,
    OutputFileConfig,
    RowEncoder,
    TextEncoder,
)
from kstreamlet.sinks.files.parquet import ParquetFormat
from kstreamlet.sinks.files.rolling import DefaultRollingPolicy, OnCheckpointRollingPolicy, PartFileInfo, RollingPolicy
from kstreamlet.sinks.files.sink import FileSink, FileTxn

__all__ = [
    "FileSink", "FileTxn", "OutputFileConfig", "BucketContext", "BucketAssigner", "DateTimeBucketAssigner",
    "BasePathBucketAssigner", "RollingPolicy", "DefaultRollingPolicy", "OnCheckpointRollingPolicy",
    "PartFileInfo", "RowEncoder", "TextEncoder", "JsonLinesEncoder", "CsvEncoder", "BulkFormat",
    "BulkWriter", "ParquetFormat", "java_date_formatter",
]

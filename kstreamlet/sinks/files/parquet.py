"""Parquet part files for :class:`~kstreamlet.sinks.files.FileSink` (pyarrow; ``kstreamlet[parquet]``)."""

from __future__ import annotations

from collections.abc import Mapping as _AbcMapping
from typing import Any

import structlog

from kstreamlet.sinks.files.formats import BulkFormat, BulkWriter

log = structlog.get_logger("kstreamlet.sinks.files")

class ParquetFormat(BulkFormat):
    """Parquet via pyarrow. Records are dicts, dataclasses or pydantic models.

    ``schema`` (a ``pyarrow.Schema``) is best given: then a record whose top-level field has
    the wrong Python type fails in ``write`` and follows the app's error policy (dead-letter
    topic). Without it the schema of each part file is inferred from its first row group.
    Fields outside the schema are dropped, missing ones are null. A row pyarrow still cannot
    convert is logged and left out (it cannot be routed to the dead-letter topic any more,
    and failing the checkpoint would replay into the same error forever).
    ``row_group_size`` rows are buffered per row group; the last one ends at the checkpoint.
    Records are converted to Arrow a row group at a time: a dict record is kept as it is
    until then, so do not modify a record after emitting it to the sink.
    """

    def __init__(self, schema: Any = None, compression: str = "snappy", row_group_size: int = 50_000) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("ParquetFormat needs pyarrow: pip install 'kstreamlet[parquet]'") from e
        self.schema = schema
        self.compression = compression
        self.row_group_size = row_group_size

    def create_writer(self, stream: Any) -> BulkWriter:
        return _ParquetWriter(self, stream)


def _python_types_for(arrow_type: Any) -> tuple[type, ...] | None:
    """Python types acceptable for a top-level Arrow column (None: not checked)."""
    import datetime as _d

    import pyarrow as pa

    t = pa.types
    if t.is_boolean(arrow_type):
        return (bool,)
    if t.is_integer(arrow_type):
        return (int,)
    if t.is_floating(arrow_type):
        return (int, float)
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return (str,)
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type):
        return (bytes, bytearray)
    if t.is_timestamp(arrow_type):
        return (_d.datetime,)
    if t.is_date(arrow_type):
        return (_d.date,)
    return None


class _ParquetWriter(BulkWriter):
    """Buffers a row group's records as they come (dicts kept as they are: appending to a list
    is the whole per-record cost) and converts each row group in one go
    (``pyarrow.Table.from_pylist``, column by column) when it is full or the file finishes.
    A checkpoint (bulk files roll at each one) thus writes its rows with one conversion
    and one ``write_table`` per ``row_group_size`` rows."""

    def __init__(self, fmt: ParquetFormat, stream: Any) -> None:
        self.fmt = fmt
        self.stream = stream
        self.rows: list[Any] = []
        self.writer: Any = None
        self.schema = fmt.schema
        self.dropped = 0
        self.limit = max(1, int(fmt.row_group_size))
        self._checks: list[tuple[str, tuple[type, ...], Any]] = []
        self.buffer = self.rows
        if self.schema is not None:
            self._set_checks()

    def _set_checks(self) -> None:
        self._checks = [(f.name, ts, f.type) for f in self.schema if (ts := _python_types_for(f.type)) is not None]
        # Records that must be checked against the schema go through add().
        self.buffer = None if self._checks else self.rows

    def add(self, value: Any) -> bool:
        if type(value) is not dict:
            value = self._as_dict(value)
        if self._checks:
            self._check(value)
        rows = self.rows
        rows.append(value)
        if len(rows) >= self.limit:
            self.flush()
            return True
        return False

    @staticmethod
    def _as_dict(value: Any) -> Any:
        if hasattr(value, "model_dump"):
            return value.model_dump()
        if isinstance(value, _AbcMapping):
            return dict(value)
        import dataclasses

        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(f"ParquetFormat needs dicts, dataclasses or pydantic models, got {type(value).__name__}")

    def _check(self, value: Any) -> None:
        get = value.get
        for name, types, arrow_type in self._checks:
            v = get(name)
            if v is not None and not isinstance(v, types):
                raise ValueError(f"field {name!r} = {v!r:.100} ({type(v).__name__}) does not fit the Parquet "
                                 f"column type {arrow_type}")

    def flush(self) -> None:
        """Convert the buffered rows and write them as row group(s)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self.rows
        if not rows:
            return
        self.rows = []
        self.buffer = None if self._checks else self.rows
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            table = self._convert_row_by_row(rows)
        if table is None:
            return
        if self.writer is None:
            self.schema = table.schema
            self._set_checks()
            self.writer = pq.ParquetWriter(self.stream, self.schema, compression=self.fmt.compression)
        self.writer.write_table(table, row_group_size=self.limit)

    def _convert_row_by_row(self, rows: list[Any]) -> Any:
        """The slow path after a failed conversion: keep the rows that fit, log the others."""
        import pyarrow as pa

        schema = self.schema if self.schema is not None else pa.Table.from_pylist(rows[:1]).schema
        good = []
        for row in rows:
            try:
                pa.Table.from_pylist([row], schema=schema)
                good.append(row)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as e:
                self.dropped += 1
                log.error("row does not fit the Parquet schema; left out", row=repr(row)[:300], error=str(e))
        return pa.Table.from_pylist(good, schema=schema) if good else None

    def finish(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


__all__ = ["ParquetFormat"]

"""File sink with Flink ``FileSink`` / ``StreamingFileSink`` semantics, on fsspec filesystems.

Layout: ``<base_path>/<bucket id>/<prefix>-<partition>-<counter><suffix>``. A *bucket* is
a sub-directory chosen per record by a bucket assigner (:class:`DateTimeBucketAssigner`,
hourly ``yyyy-MM-dd--HH`` by default; :class:`BasePathBucketAssigner`; or any callable
``(value, BucketContext) -> str``). Each task (one input partition) has at most one
*in-progress* part file per bucket; the counter is per task, grows across buckets and
survives restarts, so names are never reused.

Lifecycle (file names of ``part-0-3`` with the default prefix and suffix)::

    .part-0-3.inprogress   being written (hidden: readers skip dot files)
    .part-0-3.pending      rolled: complete, waiting for the checkpoint to commit
    part-0-3               finished: renamed after the Kafka transaction of the checkpoint
                           that contains it committed; never modified again

Rolling (in-progress → pending) follows the rolling policy: :class:`DefaultRollingPolicy`
(size reached, open longer than the rollover interval, or no writes for the inactivity
interval — checked after each write, at each checkpoint, and by a processing-time timer
every ``bucket_check_interval``, all on the task clock) or :class:`OnCheckpointRollingPolicy`.
Bulk formats (:class:`ParquetFormat`) always roll at every checkpoint, as in Flink: a
Parquet file is only readable once its footer is written.

Exactly-once, and why in-progress row files may stay open across checkpoints
-----------------------------------------------------------------------------
Like Flink's recoverable writers, a row-format in-progress file on a local filesystem is
*not* rolled at every checkpoint (with a 100 ms commit interval that would make ten files
per second). Instead the checkpoint flushes (and by default fsyncs) it and records its
length in the committable, which commits atomically with the Kafka offsets. Bytes after
that length belong to records the next checkpoint will cover; if the process dies, or the
checkpoint aborts, recovery truncates the file back to the recorded length and the
records are replayed into it. So every byte of a finished file was committed exactly once.
Filesystems that cannot append and truncate (object stores via fsspec) roll every part at
every checkpoint instead; bulk formats are discarded on recovery and replayed.

Recovery (:meth:`FileSink.recover`, also used for aborts): pending files of the committed
checkpoint are finished; in-progress files it recorded are truncated to their recorded
length (a file rolled after that checkpoint is un-rolled); every other hidden file of this
partition is a leftover of an uncommitted checkpoint and is deleted.

Ownership: one base path + prefix per app (recovery deletes unreferenced hidden files of
its partition numbers). Use different prefixes for two sinks writing the same directory.
"""

from __future__ import annotations

import csv
import io
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping as _AbcMapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import orjson
import structlog

from kstreamlet.sinks._faults import maybe_crash
from kstreamlet.sinks.base import SinkContext, SinkUnavailableError, TwoPhaseCommitSink

log = structlog.get_logger("kstreamlet.sinks.files")

# --- Java date patterns -----------------------------------------------------------------------

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_LETTERS = "yMdHmsS"


def java_date_formatter(pattern: str) -> Callable[[datetime], str]:
    """Compile a Java ``DateTimeFormatter`` pattern (the subset for bucket names) to a function.

    Letters: ``y`` year (``yy`` two digits, else zero-padded to the count), ``M`` month
    (``M``/``MM`` number, ``MMM`` ``Jan``, ``MMMM`` ``January``), ``d`` day, ``H`` hour 0-23,
    ``m`` minute, ``s`` second, ``S`` fraction of second. Text in single quotes is literal
    (``''`` is a quote); other non-letters are literal. Other letters raise ``ValueError``.
    """
    parts: list[tuple[str, int] | str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            if i + 1 < n and pattern[i + 1] == "'":
                parts.append("'")
                i += 2
                continue
            j = i + 1
            text = []
            while True:
                if j >= n:
                    raise ValueError(f"unterminated quote in date pattern {pattern!r}")
                if pattern[j] == "'":
                    if j + 1 < n and pattern[j + 1] == "'":
                        text.append("'")
                        j += 2
                        continue
                    break
                text.append(pattern[j])
                j += 1
            parts.append("".join(text))
            i = j + 1
        elif c.isascii() and c.isalpha():
            j = i
            while j < n and pattern[j] == c:
                j += 1
            if c not in _LETTERS:
                raise ValueError(f"unsupported letter {c!r} in date pattern {pattern!r}; supported: {_LETTERS} "
                                 "(quote literal text: 'T')")
            parts.append((c, j - i))
            i = j
        else:
            parts.append(c)
            i += 1

    def fmt(dt: datetime) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
                continue
            letter, count = p
            if letter == "y":
                out.append(f"{dt.year % 100:02d}" if count == 2 else f"{dt.year:0{count}d}")
            elif letter == "M":
                out.append(_MONTHS[dt.month - 1][:3] if count == 3 else _MONTHS[dt.month - 1] if count > 3
                           else f"{dt.month:0{count}d}")
            elif letter == "S":
                out.append(f"{dt.microsecond:06d}"[:count].ljust(count, "0"))
            else:
                v = {"d": dt.day, "H": dt.hour, "m": dt.minute, "s": dt.second}[letter]
                out.append(f"{v:0{count}d}")
        return "".join(out)

    return fmt


# --- buckets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketContext:
    """What a bucket assigner may look at besides the value."""

    #: Task clock, epoch ms.
    processing_time: int
    #: The record's timestamp (event time), epoch ms.
    timestamp: int
    key: Any


class BucketAssigner(ABC):
    """Chooses the bucket (a relative directory, "" for the base path) of each record."""

    @abstractmethod
    def bucket_id(self, value: Any, ctx: BucketContext) -> str: ...


class BasePathBucketAssigner(BucketAssigner):
    """Everything in the base path: a single global bucket."""

    def bucket_id(self, value: Any, ctx: BucketContext) -> str:
        return ""


class DateTimeBucketAssigner(BucketAssigner):
    """Buckets named by time: ``format`` is a Java date pattern (default ``yyyy-MM-dd--HH``,
    one bucket per hour), in ``tz`` (a zone name like ``"UTC"`` or a ``tzinfo``; default the
    system's local zone, as Flink), of processing time (default) or the record timestamp."""

    def __init__(self, format: str = "yyyy-MM-dd--HH", tz: str | tzinfo | None = None,
                 use_event_time: bool = False) -> None:
        self.format = format
        self._fmt = java_date_formatter(format)
        if isinstance(tz, str):
            from zoneinfo import ZoneInfo

            tz = ZoneInfo(tz)
        self.tz = tz
        self.use_event_time = use_event_time
        # Bucket names change at most once a second unless the pattern has fractions.
        # (the segments outside quotes are the even ones of a split on the quote character)
        self._cache_unit = 1 if any("S" in seg for seg in format.split("'")[0::2]) else 1000
        self._last: tuple[int, str] = (-1, "")

    def bucket_id(self, value: Any, ctx: BucketContext) -> str:
        return self.name_at(ctx.timestamp if self.use_event_time else ctx.processing_time)

    def name_at(self, ms: int) -> str:
        """The bucket name of the instant ``ms`` (epoch milliseconds)."""
        unit = ms // self._cache_unit
        last = self._last
        if unit == last[0]:
            return last[1]
        dt = datetime.fromtimestamp(ms / 1000, self.tz)  # tz None: local time, DST-aware
        name = self._fmt(dt)
        self._last = (unit, name)
        return name

    def __repr__(self) -> str:
        return f"DateTimeBucketAssigner(format={self.format!r}, tz={self.tz!r}, use_event_time={self.use_event_time})"


# --- rolling policies ---------------------------------------------------------------------------


class PartFileInfo(Protocol):
    """State of an in-progress part file, for rolling decisions (task-clock milliseconds)."""

    bucket: str
    size: int
    created_ms: int
    updated_ms: int


class RollingPolicy(ABC):
    """Decides when an in-progress part file is rolled (closed and made pending)."""

    @abstractmethod
    def should_roll_on_event(self, part: PartFileInfo) -> bool:
        """After a record was written to ``part``."""

    @abstractmethod
    def should_roll_on_processing_time(self, part: PartFileInfo, now_ms: int) -> bool:
        """On processing-time checks (timer, checkpoints, writes)."""

    @abstractmethod
    def should_roll_on_checkpoint(self, part: PartFileInfo) -> bool:
        """At a checkpoint's pre-commit."""

    def check_interval(self) -> float | None:
        """Seconds between processing-time checks, or None if time never matters."""
        return None


class DefaultRollingPolicy(RollingPolicy):
    """Roll when the file reaches ``max_part_size`` bytes, has been open ``rollover_interval``
    seconds, or got no record for ``inactivity_interval`` seconds (Flink's defaults: 128 MiB,
    60 s, 60 s)."""

    def __init__(self, max_part_size: int = 128 * 1024 * 1024, rollover_interval: float = 60.0,
                 inactivity_interval: float = 60.0) -> None:
        if max_part_size < 1 or rollover_interval <= 0 or inactivity_interval <= 0:
            raise ValueError("max_part_size, rollover_interval and inactivity_interval must be > 0")
        self.max_part_size = max_part_size
        self.rollover_interval = rollover_interval
        self.inactivity_interval = inactivity_interval
        self._rollover_ms = int(rollover_interval * 1000)
        self._inactivity_ms = int(inactivity_interval * 1000)

    def should_roll_on_event(self, part: PartFileInfo) -> bool:
        return part.size >= self.max_part_size

    def should_roll_on_processing_time(self, part: PartFileInfo, now_ms: int) -> bool:
        return now_ms - part.created_ms >= self._rollover_ms or now_ms - part.updated_ms >= self._inactivity_ms

    def should_roll_on_checkpoint(self, part: PartFileInfo) -> bool:
        return part.size >= self.max_part_size

    def check_interval(self) -> float | None:
        return min(60.0, self.rollover_interval, self.inactivity_interval)

    def __repr__(self) -> str:
        return (f"DefaultRollingPolicy(max_part_size={self.max_part_size}, rollover_interval={self.rollover_interval}, "
                f"inactivity_interval={self.inactivity_interval})")


class OnCheckpointRollingPolicy(RollingPolicy):
    """Roll every in-progress file at every checkpoint (the only policy of bulk formats in Flink)."""

    def should_roll_on_event(self, part: PartFileInfo) -> bool:
        return False

    def should_roll_on_processing_time(self, part: PartFileInfo, now_ms: int) -> bool:
        return False

    def should_roll_on_checkpoint(self, part: PartFileInfo) -> bool:
        return True


# --- encodings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFileConfig:
    """Part file names: ``<prefix>-<partition>-<counter><suffix>``."""

    prefix: str = "part"
    suffix: str = ""

    def __post_init__(self) -> None:
        if not self.prefix or "/" in self.prefix or self.prefix.startswith(".") or "/" in self.suffix:
            raise ValueError(f"bad OutputFileConfig {self!r}: the prefix must be non-empty, not start with '.', "
                             "and neither may contain '/'")


def _plain(value: Any) -> Any:
    """A JSON-able view of pydantic models (orjson handles dicts, lists, dataclasses, datetimes)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


class RowEncoder(ABC):
    """Encodes one record as bytes appended to a part file (Flink's ``Encoder``)."""

    @abstractmethod
    def encode(self, value: Any) -> bytes: ...

    def header(self) -> bytes:
        """Bytes written at the start of every new part file (e.g. a CSV header)."""
        return b""


class TextEncoder(RowEncoder):
    """``str(value)`` + newline, UTF-8 (Flink's ``SimpleStringEncoder``); bytes are written as is."""

    def encode(self, value: Any) -> bytes:
        if type(value) is str:
            return value.encode() + b"\n"
        if isinstance(value, bytes):
            return value + b"\n"
        return (value if isinstance(value, str) else str(value)).encode() + b"\n"


class JsonLinesEncoder(RowEncoder):
    """One JSON document per line (dicts, lists, dataclasses, pydantic models, datetimes...)."""

    def encode(self, value: Any) -> bytes:
        return orjson.dumps(value, default=_plain, option=orjson.OPT_APPEND_NEWLINE)


class CsvEncoder(RowEncoder):
    """CSV rows of ``columns`` (dict keys or attributes; tuples/lists as they are), with a
    header line in every part file unless ``header=False``."""

    def __init__(self, columns: Sequence[str] | None = None, header: bool = True, delimiter: str = ",") -> None:
        self.columns = list(columns) if columns is not None else None
        self.with_header = header and self.columns is not None
        self.delimiter = delimiter
        self._local = threading.local()

    def _line(self, row: Sequence[Any]) -> bytes:
        # One reusable buffer + csv writer per thread (tasks share the encoder through
        # copy.copy of the sink): creating them per row costs more than formatting the row.
        loc = self._local
        try:
            buf, writer = loc.buf, loc.writer
        except AttributeError:
            buf = loc.buf = io.StringIO()
            writer = loc.writer = csv.writer(buf, delimiter=self.delimiter, lineterminator="\n")
        buf.seek(0)
        buf.truncate()
        writer.writerow(row)
        return buf.getvalue().encode()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_local", None)  # not picklable/deep-copyable; rebuilt on demand
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def encode(self, value: Any) -> bytes:
        t = type(value)
        if t is tuple or t is list or isinstance(value, (tuple, list)):
            return self._line(value)
        if self.columns is None:
            raise ValueError("CsvEncoder needs columns to encode dicts or objects")
        if t is dict or isinstance(value, _AbcMapping):
            get = value.get
            return self._line([get(c) for c in self.columns])
        return self._line([getattr(value, c) for c in self.columns])

    def header(self) -> bytes:
        return self._line(self.columns) if self.with_header and self.columns else b""


class _CallableEncoder(RowEncoder):
    def __init__(self, fn: Callable[[Any], bytes | str]) -> None:
        self.fn = fn

    def encode(self, value: Any) -> bytes:
        out = self.fn(value)
        return out.encode() if isinstance(out, str) else bytes(out)


class BulkWriter(ABC):
    """Writes records into one bulk-encoded file; ``finish`` completes it (e.g. the Parquet footer)."""

    #: A list the sink may append plain ``dict`` records to instead of calling :meth:`add`
    #: (saves a call per record), calling :meth:`flush` once it holds ``limit`` records; or
    #: None (the default): every record goes through :meth:`add`.
    buffer: list[Any] | None = None
    limit: int = 0

    def flush(self) -> None:
        """Write what :attr:`buffer` holds (only called when a writer offers a buffer)."""

    @abstractmethod
    def add(self, value: Any) -> bool | None:
        """Add one record. Return ``False`` when nothing reached the stream (the record is
        buffered), so the sink need not measure the file; ``True`` or ``None`` (unknown) make
        the sink take the file's size (for size-based rolling policies)."""

    @abstractmethod
    def finish(self) -> None: ...


class BulkFormat(ABC):
    """A bulk encoding (Flink's ``BulkWriter.Factory``): part files roll at every checkpoint."""

    @abstractmethod
    def create_writer(self, stream: Any) -> BulkWriter: ...


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


# --- storage --------------------------------------------------------------------------------------


class _Storage:
    """The few filesystem operations the sink needs: local (os) or any fsspec filesystem."""

    def __init__(self, base_path: str, filesystem: Any = None, storage_options: Mapping[str, Any] | None = None) -> None:
        plain = filesystem is None and not storage_options and (
            "://" not in base_path or base_path.startswith("file://"))
        if plain:
            # A local path needs no fsspec (it is only in the parquet extra).
            self.fs: Any = None
            self.local = True
            path = base_path[len("file://"):] if base_path.startswith("file://") else base_path
        else:
            try:
                import fsspec
                from fsspec.implementations.local import LocalFileSystem
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(f"writing to {base_path!r} needs fsspec: pip install 'kstreamlet[parquet]'") from e
            if filesystem is None:
                fs, path = fsspec.core.url_to_fs(base_path, **(storage_options or {}))
            else:
                fs, path = filesystem, filesystem._strip_protocol(base_path)
            self.fs = fs
            self.local = isinstance(fs, LocalFileSystem)
        self.base = os.path.abspath(path) if self.local else str(path).rstrip("/")
        self.sep = os.sep if self.local else "/"

    def join(self, *parts: str) -> str:
        return self.sep.join([self.base, *[p for p in parts if p]])

    def makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)

    def open_new(self, path: str) -> Any:
        if self.local:
            return open(path, "xb")  # exclusive: never clobber another writer's file
        return self.fs.open(path, "wb")

    def open_append(self, path: str) -> Any:
        return open(path, "ab")  # only used on local filesystems (resumable row files)

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else bool(self.fs.exists(path))

    def rename(self, src: str, dst: str) -> None:
        if self.local:
            os.replace(src, dst)  # atomic on POSIX
        else:
            self.fs.mv(src, dst)

    def delete(self, path: str) -> None:
        try:
            if self.local:
                os.remove(path)
            else:
                self.fs.rm(path)
        except FileNotFoundError:
            pass

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def size(self, path: str) -> int:
        return os.path.getsize(path) if self.local else int(self.fs.size(path))

    def walk(self, buckets: set[str] | None) -> Iterator[tuple[str, str]]:
        """``(bucket, file name)`` of files in the given buckets, or anywhere under the base path."""
        if buckets is not None:
            for b in buckets:
                d = self.join(b)
                try:
                    names = os.listdir(d) if self.local else [p.rsplit("/", 1)[-1] for p in self.fs.ls(d, detail=False)]
                except FileNotFoundError:
                    continue
                for name in names:
                    yield b, name
            return
        if self.local:
            for dirpath, _dirs, files in os.walk(self.base):
                rel = os.path.relpath(dirpath, self.base)
                bucket = "" if rel == "." else rel.replace(os.sep, "/")
                for name in files:
                    yield bucket, name
            return
        if not self.fs.exists(self.base):
            return
        for p in self.fs.find(self.base):
            rel = p[len(self.base):].lstrip("/")
            bucket, _, name = rel.rpartition("/")
            yield bucket, name


# --- the sink -------------------------------------------------------------------------------------


class _Part:
    """An in-progress part file of one bucket."""

    __slots__ = ("bucket", "counter", "size", "synced", "created_ms", "updated_ms", "handle", "writer")

    def __init__(self, bucket: str, counter: int, size: int, created: int, updated: int) -> None:
        self.bucket = bucket
        self.counter = counter
        self.size = size
        #: Bytes known to be flushed (and fsynced): checkpoints skip files with nothing new.
        self.synced = size
        self.created_ms = created
        self.updated_ms = updated
        self.handle: Any = None
        self.writer: BulkWriter | None = None


class FileTxn:
    """A checkpoint's transaction; the file sink keeps its state per task, so this is a marker."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq


def _empty_state() -> dict[str, Any]:
    return {"v": 1, "counter": 0, "in_progress": [], "pending": []}


class FileSink(TwoPhaseCommitSink[FileTxn]):
    """Writes records into bucketed part files, exactly once (see the module docs)."""

    def __init__(
        self,
        base_path: str,
        format: RowEncoder | BulkFormat | Callable[[Any], bytes | str] | None = None,
        *,
        bucket_assigner: BucketAssigner | Callable[[Any, BucketContext], str] | None = None,
        rolling_policy: RollingPolicy | None = None,
        output_file_config: OutputFileConfig | None = None,
        filesystem: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        fsync: bool = True,
        bucket_check_interval: float | None = None,
    ) -> None:
        """
        Args:
            base_path: directory or fsspec URL (``file:///data/out``, ``memory://x``, ``s3://b/p``).
            format: a :class:`RowEncoder` (default :class:`TextEncoder`), a callable
                ``value -> bytes | str`` (a complete line, newline included), or a
                :class:`BulkFormat` such as :class:`ParquetFormat`.
            bucket_assigner: default ``DateTimeBucketAssigner()`` (hourly, local time zone).
            rolling_policy: default :class:`DefaultRollingPolicy` for rows,
                :class:`OnCheckpointRollingPolicy` for bulk formats.
            output_file_config: prefix and suffix of part file names.
            filesystem: an fsspec filesystem instance (else derived from ``base_path``).
            storage_options: passed to fsspec when deriving the filesystem.
            fsync: fsync part files at checkpoints and before they become pending (survives
                a machine crash, not just a process crash).
            bucket_check_interval: seconds between processing-time rolling checks; default
                from the policy (its smallest interval, at most 60 s).
        """
        if format is None:
            format = TextEncoder()
        elif not isinstance(format, (RowEncoder, BulkFormat)):
            if not callable(format):
                raise TypeError("format must be a RowEncoder, a BulkFormat or a callable value -> bytes")
            format = _CallableEncoder(format)
        self.format = format
        self.bulk = isinstance(format, BulkFormat)
        if bucket_assigner is None:
            bucket_assigner = DateTimeBucketAssigner()
        self.bucket_assigner = bucket_assigner
        self._assign: Callable[[Any, BucketContext], str] = (
            bucket_assigner.bucket_id if isinstance(bucket_assigner, BucketAssigner) else bucket_assigner)
        self.rolling_policy = rolling_policy or (OnCheckpointRollingPolicy() if self.bulk else DefaultRollingPolicy())
        self.output = output_file_config or OutputFileConfig()
        self.base_path = base_path
        self.fsync = fsync
        self._filesystem = filesystem
        self._storage_options = dict(storage_options or {})
        self.bucket_check_interval = bucket_check_interval
        _Storage(base_path, filesystem, storage_options)  # fail fast on a bad URL / missing fsspec backend

    @classmethod
    def for_row_format(cls, base_path: str, encoder: RowEncoder | Callable[[Any], bytes | str], **kw: Any) -> "FileSink":
        """Flink's ``FileSink.forRowFormat(path, encoder)``."""
        return cls(base_path, encoder, **kw)

    @classmethod
    def for_bulk_format(cls, base_path: str, bulk_format: BulkFormat, **kw: Any) -> "FileSink":
        """Flink's ``FileSink.forBulkFormat(path, factory)``."""
        return cls(base_path, bulk_format, **kw)

    def processing_time_interval(self) -> float | None:
        if self.bucket_check_interval is not None:
            return self.bucket_check_interval
        return self.rolling_policy.check_interval()

    # --- per task ------------------------------------------------------------------------------

    def open(self, ctx: SinkContext) -> None:
        super().open(ctx)
        self.storage = _Storage(self.base_path, self._filesystem, self._storage_options)
        #: Row files on a local filesystem are resumable: kept open across checkpoints and
        #: truncated on recovery. Everything else rolls at every checkpoint.
        self.resumable = self.storage.local and not self.bulk
        p, s = re.escape(self.output.prefix), re.escape(self.output.suffix)
        self._hidden_re = re.compile(rf"^\.{p}-{ctx.partition}-(\d+){s}\.(inprogress|pending)$")
        self._final_re = re.compile(rf"^{p}-{ctx.partition}-(\d+){s}$")
        self._counter = 0
        self._parts: dict[str, _Part] = {}
        self._rolled: list[tuple[str, int]] = []
        self._committed: dict[str, Any] = _empty_state()
        self._touched: set[str] = set()
        self._dirs: set[str] = set()
        self._buckets_ok: dict[str, str] = {}
        self._dirty = False
        self._last_check = 0
        interval = self.processing_time_interval()
        self._check_ms = int(interval * 1000) if interval else None
        # Per-record shortcuts, decided once per task.
        self._clock = ctx.clock
        assigner = self.bucket_assigner
        self._fixed_bucket: str | None = "" if type(assigner) is BasePathBucketAssigner else None
        self._date_buckets = assigner if type(assigner) is DateTimeBucketAssigner else None
        if self._date_buckets is not None:
            self._date_event_time = self._date_buckets.use_event_time
            self._date_unit = self._date_buckets._cache_unit
        self._date_last: tuple[int, str] = (-1, "")
        self._encode = None if self.bulk else self.format.encode  # type: ignore[union-attr]
        policy = self.rolling_policy
        # OnCheckpointRollingPolicy never rolls on an event: skip the call per record.
        self._roll_on_event = (None if type(policy).should_roll_on_event is OnCheckpointRollingPolicy.should_roll_on_event
                               else policy.should_roll_on_event)
        # Nothing per record depends on time: the part's updated_ms only feeds time-based rolling,
        # which OnCheckpointRollingPolicy does not do (and bulk parts never stay in progress).
        self._bulk_plain = (self.bulk and self._fixed_bucket is not None and self._check_ms is None
                            and type(policy) is OnCheckpointRollingPolicy)
        self._log = log.bind(sink=ctx.sink_name, partition=ctx.partition)
        self.stats = {"rolled": 0, "finished": 0, "truncated": 0, "deleted": 0, "unrolled": 0}

    def _name(self, counter: int) -> str:
        return f"{self.output.prefix}-{self.ctx.partition}-{counter}{self.output.suffix}"

    def path(self, bucket: str, counter: int, state: str = "finished") -> str:
        """Path of a part file in ``state`` (``finished``, ``inprogress`` or ``pending``)."""
        name = self._name(counter)
        if state != "finished":
            name = f".{name}.{state}"
        return self.storage.join(*bucket.split("/"), name) if bucket else self.storage.join(name)

    def _bucket(self, value: Any, now: int, ts: int, key: Any) -> str:
        raw = self._assign(value, BucketContext(now, ts, key))
        ok = self._buckets_ok.get(raw)
        return ok if ok is not None else self._bucket_ok(raw)

    def _bucket_ok(self, raw: Any) -> str:
        """Check and normalise a bucket id not seen before (then cached)."""
        norm = "/".join(p for p in str(raw).replace("\\", "/").split("/") if p and p != ".")
        if str(raw).startswith("/") or any(p == ".." for p in norm.split("/")):
            raise ValueError(f"bucket id {raw!r} must be a relative path without '..'")
        if len(self._buckets_ok) > 10_000:
            self._buckets_ok.clear()
        self._buckets_ok[raw] = norm
        return norm

    # --- the protocol ----------------------------------------------------------------------------

    def begin_transaction(self) -> FileTxn:
        return FileTxn(self.ctx.checkpoint_id)

    def write(self, txn: FileTxn, value: Any, key: Any, timestamp: int) -> None:
        if self._bulk_plain:
            # Bulk format, one bucket, rolled only at checkpoints: nothing per record needs the
            # clock or a rolling decision; the record goes to the writer's row buffer. (The same
            # append as in the general bulk branch below, kept inline on purpose: folding the two
            # measured 5-7% slower on this path, `python -m bench.sinks --skip-e2e`.)
            part = self._parts.get(self._fixed_bucket)  # type: ignore[arg-type]
            if part is None:
                part = self._open_part(self._fixed_bucket, self._clock())  # type: ignore[arg-type]
            w = part.writer
            buf = w.buffer  # type: ignore[union-attr]
            if buf is not None and type(value) is dict:
                buf.append(value)
                if len(buf) >= w.limit:  # type: ignore[union-attr]
                    w.flush()  # type: ignore[union-attr]
                    part.size = part.handle.tell()
            elif w.add(value) is not False:  # type: ignore[union-attr]
                part.size = part.handle.tell()
            self._dirty = True
            return
        now = self._clock()
        fixed = self._fixed_bucket
        if fixed is not None:
            bucket = fixed
        elif self._date_buckets is not None:
            # The default assigner, without a BucketContext per record: its name changes once
            # per second (or ms) at most, so the last (unit, checked name) is remembered here.
            ms = timestamp if self._date_event_time else now
            unit = ms // self._date_unit
            last = self._date_last
            if unit == last[0]:
                bucket = last[1]
            else:
                raw = self._date_buckets.name_at(ms)
                ok = self._buckets_ok.get(raw)
                bucket = ok if ok is not None else self._bucket_ok(raw)
                self._date_last = (unit, bucket)
        else:
            bucket = self._bucket(value, now, timestamp, key)
        part = self._parts.get(bucket)
        if self.bulk:
            if part is None:
                part = self._open_part(bucket, now)
            w = part.writer
            buf = w.buffer  # type: ignore[union-attr]
            if buf is not None and type(value) is dict:
                buf.append(value)
                if len(buf) >= w.limit:  # type: ignore[union-attr]
                    w.flush()  # type: ignore[union-attr]
                    part.size = part.handle.tell()
            elif w.add(value) is not False:  # type: ignore[union-attr]
                part.size = part.handle.tell()
        else:
            data = self._encode(value)
            if part is None:
                part = self._open_part(bucket, now)
            elif part.handle is None:
                part.handle = self._guard(self.storage.open_append, self.path(bucket, part.counter, "inprogress"))
            part.handle.write(data)
            part.size += len(data)
        part.updated_ms = now
        self._dirty = True
        if self._roll_on_event is not None and self._roll_on_event(part):
            self._roll(part)
        if self._check_ms is not None and now - self._last_check >= self._check_ms:
            self._check_time(now)

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a filesystem operation; I/O errors abort the checkpoint (retried after a backoff)."""
        try:
            return fn(*args)
        except OSError as e:
            raise SinkUnavailableError(f"file sink I/O error: {e!r}") from e

    def _open_part(self, bucket: str, now: int) -> _Part:
        d = self.storage.join(*bucket.split("/")) if bucket else self.storage.base
        if d not in self._dirs:
            self._guard(self.storage.makedirs, d)
            self._dirs.add(d)
        while True:
            counter = self._counter
            self._counter += 1
            if self.storage.exists(self.path(bucket, counter)) or self.storage.exists(self.path(bucket, counter, "pending")):
                continue  # a name from before the counter was known (lost state): never overwrite
            try:
                handle = self._guard(self.storage.open_new, self.path(bucket, counter, "inprogress"))
            except SinkUnavailableError as e:
                if isinstance(e.__cause__, FileExistsError):
                    continue
                raise
            break
        part = _Part(bucket, counter, 0, now, now)
        part.synced = -1
        part.handle = handle
        if self.bulk:
            part.writer = self.format.create_writer(handle)  # type: ignore[union-attr]
        else:
            head = self.format.header()  # type: ignore[union-attr]
            if head:
                handle.write(head)
                part.size = len(head)
        self._parts[bucket] = part
        self._touched.add(bucket)
        return part

    def _sync(self, handle: Any) -> None:
        handle.flush()
        if self.fsync and self.storage.local:
            os.fsync(handle.fileno())

    def _roll(self, part: _Part) -> None:
        """In-progress → pending: complete the file and rename it; it finishes at the next commit."""
        def close() -> None:
            if part.handle is None:  # restored, untouched since: the file is complete on disk
                return
            if part.writer is not None:
                part.writer.finish()
            self._sync(part.handle)
            part.handle.close()

        self._guard(close)
        part.handle = None
        self._guard(self.storage.rename, self.path(part.bucket, part.counter, "inprogress"),
                    self.path(part.bucket, part.counter, "pending"))
        del self._parts[part.bucket]
        self._rolled.append((part.bucket, part.counter))
        self._touched.add(part.bucket)
        self._dirty = True
        self.stats["rolled"] += 1

    def _check_time(self, now: int) -> None:
        self._last_check = now
        for part in list(self._parts.values()):
            if self.rolling_policy.should_roll_on_processing_time(part, now):
                self._roll(part)

    def on_processing_time(self, txn: FileTxn, now_ms: int) -> bool:
        self._check_time(now_ms)
        return bool(self._parts)

    def pre_commit(self, txn: FileTxn) -> Any:
        now = self.ctx.clock()
        policy = self.rolling_policy
        for part in list(self._parts.values()):
            if (not self.resumable or policy.should_roll_on_checkpoint(part)
                    or policy.should_roll_on_processing_time(part, now)):
                self._roll(part)
            elif part.handle is not None and part.synced != part.size:
                # Stays in progress: make its bytes durable; the committable records the length.
                self._guard(self._sync, part.handle)
                part.synced = part.size
        if not self._dirty:
            return None
        state = {
            "v": 1,
            "counter": self._counter,
            "in_progress": [[p.bucket, p.counter, p.size, p.created_ms, p.updated_ms] for p in self._parts.values()],
            "pending": [[b, c] for b, c in self._rolled],
        }
        self._rolled = []
        self._dirty = False
        return state

    def commit(self, committable: Any) -> None:
        pending = committable.get("pending", [])
        for bucket, counter in pending:
            src, dst = self.path(bucket, counter, "pending"), self.path(bucket, counter)
            if self.storage.exists(src):
                self._guard(self.storage.rename, src, dst)
                self.stats["finished"] += 1
                if len(pending) > 1:
                    maybe_crash("during_rename")
            elif not self.storage.exists(dst):
                self._log.error("pending part file missing at commit; its records are lost", path=src)
        self._committed = committable
        self._touched = {p.bucket for p in self._parts.values()}

    def abort(self, txn: FileTxn) -> None:
        for part in self._parts.values():
            if part.handle is not None:
                try:
                    part.handle.close()
                except Exception:
                    pass
        buckets = self._touched | {b for b, *_ in self._committed.get("in_progress", [])}
        self._restore(self._committed, buckets)

    def recover(self, committable: Any | None) -> None:
        self._committed = committable or _empty_state()
        self._restore(self._committed, None)

    def _restore(self, state: dict[str, Any], buckets: set[str] | None) -> None:
        """Make the files match ``state`` (see module docs); ``buckets`` None scans everything."""
        in_progress = {(b, c): (size, created, updated) for b, c, size, created, updated in state.get("in_progress", [])}
        pending = {(b, c) for b, c in state.get("pending", [])}
        restored: dict[str, _Part] = {}
        before = dict(self.stats)
        top = -1
        for bucket, name in list(self.storage.walk(buckets)):
            m = self._hidden_re.match(name)
            if m is None:
                f = self._final_re.match(name)
                if f is not None:
                    top = max(top, int(f.group(1)))
                continue
            counter, kind = int(m.group(1)), m.group(2)
            top = max(top, counter)
            key = (bucket, counter)
            if kind == "pending" and key in pending:
                self._guard(self.storage.rename, self.path(bucket, counter, "pending"), self.path(bucket, counter))
                self.stats["finished"] += 1
            elif key in in_progress and self.resumable:
                size, created, updated = in_progress[key]
                ip = self.path(bucket, counter, "inprogress")
                if kind == "pending":
                    # Rolled after the committed checkpoint: back to in progress, like the records in it.
                    self._guard(self.storage.rename, self.path(bucket, counter, "pending"), ip)
                    self.stats["unrolled"] += 1
                actual = self.storage.size(ip)
                if actual > size:
                    self._guard(self.storage.truncate, ip, size)
                    self.stats["truncated"] += 1
                elif actual < size:
                    # Only possible if bytes were lost after an fsync-less checkpoint and a machine crash.
                    self._log.error("in-progress part file is shorter than committed; records are lost",
                                    path=ip, committed=size, actual=actual)
                    size = actual
                restored[bucket] = _Part(bucket, counter, size, created, updated)
            else:
                # Written after the committed checkpoint: its records will be replayed.
                self._guard(self.storage.delete, self.path(bucket, counter, kind))
                self.stats["deleted"] += 1
        for (bucket, counter), _ in in_progress.items():
            if bucket not in restored and self.resumable:
                self._log.error("in-progress part file of the committed checkpoint is missing; its records are lost",
                                path=self.path(bucket, counter, "inprogress"))
        changed = {k: self.stats[k] - before[k] for k in before if self.stats[k] != before[k]}
        if changed:
            self._log.info("file sink restored part files to the committed checkpoint", **changed,
                           in_progress=len(restored))
        self._parts = restored
        self._rolled = []
        self._counter = max(int(state.get("counter", 0)), top + 1)
        self._touched = set(restored)
        self._dirty = False

    def close(self) -> None:
        # In-progress files stay as they are: the next owner truncates them to the committed
        # length and continues (row formats) or discards them (bulk).
        for part in getattr(self, "_parts", {}).values():
            if part.handle is not None:
                try:
                    part.handle.close()
                except Exception:
                    pass
                part.handle = None

    # --- inspection ----------------------------------------------------------------------------------

    def finished_files(self) -> list[str]:
        """Paths of this partition's finished part files (sorted), for tests and tools."""
        out = []
        for bucket, name in self.storage.walk(None):
            if self._final_re.match(name):
                out.append(self.storage.join(*bucket.split("/"), name) if bucket else self.storage.join(name))
        return sorted(out)


def finished_part_files(base_path: str, prefix: str = "part", suffix: str = "") -> list[str]:
    """Every finished part file under a local ``base_path`` (any partition), sorted."""
    rx = re.compile(rf"^{re.escape(prefix)}-\d+-\d+{re.escape(suffix)}$")
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(base_path):
        out.extend(os.path.join(dirpath, f) for f in files if rx.match(f))
    return sorted(out)


def hidden_part_files(base_path: str) -> list[str]:
    """In-progress and pending part files under a local ``base_path`` (sorted)."""
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(base_path):
        out.extend(os.path.join(dirpath, f) for f in files
                   if f.startswith(".") and (f.endswith(".inprogress") or f.endswith(".pending")))
    return sorted(out)


__all__ = [
    "FileSink", "OutputFileConfig", "BucketContext", "BucketAssigner", "DateTimeBucketAssigner",
    "BasePathBucketAssigner", "RollingPolicy", "DefaultRollingPolicy", "OnCheckpointRollingPolicy",
    "PartFileInfo", "RowEncoder", "TextEncoder", "JsonLinesEncoder", "CsvEncoder", "BulkFormat",
    "BulkWriter", "ParquetFormat", "java_date_formatter", "finished_part_files", "hidden_part_files",
]

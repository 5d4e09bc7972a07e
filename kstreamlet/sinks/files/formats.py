"""Part-file names and encodings of :class:`~kstreamlet.sinks.files.FileSink`.

Row formats (:class:`RowEncoder`: :class:`TextEncoder`, :class:`JsonLinesEncoder`,
:class:`CsvEncoder`, or a callable) append one encoded record at a time; bulk formats
(:class:`BulkFormat`, e.g. :class:`~kstreamlet.sinks.files.ParquetFormat`) write a whole
file through a :class:`BulkWriter` and roll at every checkpoint.
"""

from __future__ import annotations

import csv
import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping as _AbcMapping
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import orjson

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


class CallableEncoder(RowEncoder):
    """A row encoder from a function ``value -> bytes | str`` (a complete line, newline included)."""

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


__all__ = ["OutputFileConfig", "RowEncoder", "TextEncoder", "JsonLinesEncoder", "CsvEncoder", "CallableEncoder",
           "BulkWriter", "BulkFormat"]

"""Bucket assigners of :class:`~kstreamlet.sinks.files.FileSink`: which sub-directory a record goes to.

:class:`DateTimeBucketAssigner` names buckets with a Java date pattern (compiled by
:func:`java_date_formatter`), :class:`BasePathBucketAssigner` puts everything in the base path;
any callable ``(value, BucketContext) -> str`` works too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Callable

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


__all__ = ["java_date_formatter", "BucketContext", "BucketAssigner", "BasePathBucketAssigner", "DateTimeBucketAssigner"]

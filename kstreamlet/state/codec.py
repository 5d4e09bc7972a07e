"""Byte layouts of state-store keys and values, in one place.

Keyed state, timers, windows, joins, broadcast state and union list state all lay out their
entries with these helpers, so a store written by one version reads the same in the next:

- ``key_prefix(key)``: the length-prefixed key, ``len(4, big-endian) | key``; one key's
  entries never mix with another's in a prefix scan. ``key_of(entry)`` reads it back.
- a list of byte strings: each item ``len(4) | item``, concatenated (``encode_list`` /
  ``decode_list``; ``list_codec(serde)`` for lists of values).
- a sortable timestamp: ``ts + 2**63`` as unsigned 64-bit big-endian (``encode_timestamp`` /
  ``decode_timestamp``), so negative timestamps sort before positive ones as bytes.
- a window key: ``key_prefix | start | end``, both sortable timestamps (``window_key`` /
  ``decode_window``).

Timestamps are int64 milliseconds (Kafka's and Flink's ``long``). Arithmetic on them saturates
(``saturating_add``: ``window max timestamp + allowed lateness``, ``now + ttl``, timer times) as
Flink does (``WindowOperator.cleanupTime``, ``TtlUtils.getExpirationTimestamp``), so a sum past
``MAX_TIMESTAMP`` means "never" instead of failing to pack. The sortable codecs clamp out-of-range
timestamps the same way (only on the slow path: in-range values cost nothing extra).
"""

from __future__ import annotations

import struct
from typing import Any, Callable

from kstreamlet.serdes import Serde

_LEN = struct.Struct(">I")

#: Bias added to stored timestamps so that negative ones sort correctly as unsigned bytes.
BIAS = 2**63
#: One biased timestamp (use with ``ts + BIAS``; :func:`encode_timestamp` does both).
TIMESTAMP = struct.Struct(">Q")
#: The int64 range of timestamps (ms): Java's ``Long.MIN_VALUE`` / ``Long.MAX_VALUE``.
MIN_TIMESTAMP = -(2**63)
MAX_TIMESTAMP = 2**63 - 1
#: A window's biased ``(start, end)`` after its key prefix (:func:`window_key` does the biasing).
WINDOW = struct.Struct(">QQ")


def key_prefix(key_bytes: bytes) -> bytes:
    """Length-prefixed key, so that one key's entries never mix with another's in a scan."""
    return _LEN.pack(len(key_bytes)) + key_bytes


def key_of(entry: bytes) -> bytes:
    """The key bytes of a store entry that starts with :func:`key_prefix`."""
    (n,) = _LEN.unpack_from(entry)
    return entry[4:4 + n]


def encode_list(items: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(i)) + i for i in items)


def decode_list(raw: bytes) -> list[bytes]:
    out, pos, n = [], 0, len(raw)
    while pos < n:
        (ln,) = _LEN.unpack_from(raw, pos)
        pos += 4
        out.append(raw[pos:pos + ln])
        pos += ln
    return out


def list_codec(value_serde: Serde[Any]) -> tuple[Callable[[list[Any]], bytes], Callable[[bytes], list[Any]]]:
    """Lists of values, each serialized with ``value_serde``."""
    ser, de = value_serde.serialize, value_serde.deserialize
    return (lambda items: encode_list([ser(v) for v in items]),
            lambda raw: [de(b) for b in decode_list(raw)])


def saturate(ts: int) -> int:
    """``ts`` clamped to the int64 range ``[MIN_TIMESTAMP, MAX_TIMESTAMP]``."""
    return MAX_TIMESTAMP if ts > MAX_TIMESTAMP else MIN_TIMESTAMP if ts < MIN_TIMESTAMP else ts


def saturating_add(ts: int, delta: int) -> int:
    """``ts + delta`` saturated to the int64 range (Flink's overflow-safe ``maxTimestamp +
    allowedLateness`` and TTL expiration): a cleanup or expiry past ``MAX_TIMESTAMP`` is
    ``MAX_TIMESTAMP``, i.e. the end of time."""
    s = ts + delta
    return MAX_TIMESTAMP if s > MAX_TIMESTAMP else MIN_TIMESTAMP if s < MIN_TIMESTAMP else s


def encode_timestamp(ts: int) -> bytes:
    """A timestamp (ms, may be negative) as 8 bytes that sort like the numbers (saturated to int64)."""
    try:
        return TIMESTAMP.pack(ts + BIAS)
    except struct.error:
        return TIMESTAMP.pack(saturate(ts) + BIAS)


def decode_timestamp(raw: bytes, offset: int = 0) -> int:
    return int(TIMESTAMP.unpack_from(raw, offset)[0]) - BIAS


def window_key(prefix: bytes, start: int, end: int) -> bytes:
    """``prefix`` (a :func:`key_prefix`) followed by the window's sortable start and end (each
    saturated to int64: a window ending past ``MAX_TIMESTAMP`` is stored as ending there)."""
    try:
        return prefix + WINDOW.pack(start + BIAS, end + BIAS)
    except struct.error:
        return prefix + WINDOW.pack(saturate(start) + BIAS, saturate(end) + BIAS)


def decode_window(raw: bytes, offset: int) -> tuple[int, int]:
    """``(start, end)`` of a :func:`window_key` whose prefix is ``offset`` bytes long."""
    s, e = WINDOW.unpack_from(raw, offset)
    return s - BIAS, e - BIAS


__all__ = [
    "BIAS", "TIMESTAMP", "WINDOW", "MIN_TIMESTAMP", "MAX_TIMESTAMP", "saturate", "saturating_add", "key_prefix", "key_of", "encode_list", "decode_list", "list_codec",
    "encode_timestamp", "decode_timestamp", "window_key", "decode_window", "prefix_end",
]


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no such key, the
    prefix is all 0xFF): the exclusive upper bound of a prefix scan."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return None

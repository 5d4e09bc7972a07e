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


def encode_timestamp(ts: int) -> bytes:
    """A timestamp (ms, may be negative) as 8 bytes that sort like the numbers."""
    return TIMESTAMP.pack(ts + BIAS)


def decode_timestamp(raw: bytes, offset: int = 0) -> int:
    return int(TIMESTAMP.unpack_from(raw, offset)[0]) - BIAS


def window_key(prefix: bytes, start: int, end: int) -> bytes:
    """``prefix`` (a :func:`key_prefix`) followed by the window's sortable start and end."""
    return prefix + WINDOW.pack(start + BIAS, end + BIAS)


def decode_window(raw: bytes, offset: int) -> tuple[int, int]:
    """``(start, end)`` of a :func:`window_key` whose prefix is ``offset`` bytes long."""
    s, e = WINDOW.unpack_from(raw, offset)
    return s - BIAS, e - BIAS


__all__ = [
    "BIAS", "TIMESTAMP", "WINDOW", "key_prefix", "key_of", "encode_list", "decode_list", "list_codec",
    "encode_timestamp", "decode_timestamp", "window_key", "decode_window",
]

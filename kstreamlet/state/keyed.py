"""Keyed state (Flink's ValueState, ListState, MapState, ReducingState, AggregatingState).

State is declared with a descriptor in ``open()`` of a :class:`~kstreamlet.api.functions.KeyedProcessFunction`
and is always scoped to the key of the record (or timer) being processed::

    class Count(KeyedProcessFunction):
        def open(self, ctx):
            self.count = ctx.get_state(ValueStateDescriptor("count", serdes.INT64, default=0))

        def process_element(self, value, ctx):
            self.count.update(self.count.value() + 1)
            ctx.emit(self.count.value())

Each descriptor is one state store (one RocksDB per partition, one compacted changelog
topic ``<application_id>-<name>-changelog``). With a :class:`StateTtlConfig` entries
expire (processing time) and expired values are never returned (Flink's
``NeverReturnExpired``; update on create and write, optionally on read).

TTL is per value for value, reducing and aggregating state, per *element* for list state and per
*entry* for map state (Flink's ``TtlListState`` / ``TtlMapState``): ``add`` stamps only the
elements it adds, ``update`` the elements it writes, and with ``update_on_read`` a read refreshes
the elements (entries) it returns. Expiry is ``now + ttl`` saturated to int64
(:func:`~kstreamlet.state.codec.saturating_add`): a huge TTL means "never".

Stored values (the changelog's format, see :mod:`kstreamlet.state.codec`):

- without TTL: the serialized value; a list is ``encode_list(items)``; a map entry's key is
  ``key_prefix | user key``;
- with TTL, value/reducing/aggregating state and map entries: ``expiry(8, signed) | value``;
- with TTL, list state: ``0x80 | encode_list([expiry(8) | item, ...])`` (each element its own
  expiry). Lists written before per-element TTL (``expiry(8) | encode_list(items)``, one expiry
  for the list) still load: every element gets the list's expiry, and the next write stores the
  new layout. The two are told apart by the first byte: an old value starts with its signed
  big-endian expiry, whose first byte is 0x80 only for an expiry before -2**63 + 2**56 ms (some
  285 million years BC), which ``now + ttl`` never is.

Turning TTL on or off for an existing state is not supported (Flink rejects it with a
``StateMigrationException``): the stored values would be read in the wrong layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Generic, Iterator, Protocol, TypeVar

from kstreamlet import serdes as _serdes
from kstreamlet.eventtime import to_millis
from kstreamlet.serdes import Serde
from kstreamlet.state.codec import MAX_TIMESTAMP, MIN_TIMESTAMP, decode_list, encode_list, key_prefix
from kstreamlet.state.store import Store

T = TypeVar("T")
ACC = TypeVar("ACC")
R = TypeVar("R")
IN_contra = TypeVar("IN_contra", contravariant=True)
OUT_co = TypeVar("OUT_co", covariant=True)

_EXP = struct.Struct(">q")
_pack_exp = _EXP.pack
_unpack_exp = _EXP.unpack_from
#: First byte of a list stored with per-element TTL (see the module docstring).
_TTL_LIST = b"\x80"
_TTL_LIST_BYTE = 0x80


@dataclass(frozen=True)
class StateTtlConfig:
    """Time-to-live of state entries, in processing time.

    ``ttl_seconds``: seconds (a number) or a :class:`datetime.timedelta` (converted with
    :func:`kstreamlet.eventtime.to_millis`), e.g. ``StateTtlConfig(timedelta(hours=1))`` (Flink's
    ``StateTtlConfig.newBuilder(Duration)``). ``update_on_read``: reading refreshes the expiry
    (Flink's ``OnReadAndWrite``); default only creation and writes do (``OnCreateAndWrite``).
    Expired entries are never returned. The TTL must be positive (as in Flink); a TTL past the
    int64 range of milliseconds (also ``math.inf``) saturates: such entries never expire.
    """

    ttl_seconds: float | timedelta
    update_on_read: bool = False

    def __post_init__(self) -> None:
        ttl = self.ttl_seconds
        if isinstance(ttl, timedelta):
            if ttl <= timedelta(0):
                raise ValueError(f"state TTL must be positive, got {ttl!r}")
        elif not ttl > 0:  # also NaN
            raise ValueError(f"state TTL must be positive, got {ttl!r} s")

    @property
    def ttl_ms(self) -> int:
        """The TTL in ms (at least 1, at most ``MAX_TIMESTAMP``)."""
        ttl = self.ttl_seconds
        ms = to_millis(ttl, "state TTL") if isinstance(ttl, timedelta) else ttl * 1000
        return MAX_TIMESTAMP if ms >= MAX_TIMESTAMP else max(1, int(ms))


class AggregateFunction(Protocol[IN_contra, ACC, OUT_co]):
    """Incremental aggregation (Flink's ``AggregateFunction``)."""

    def create_accumulator(self) -> ACC: ...
    def add(self, value: IN_contra, accumulator: ACC) -> ACC: ...
    def get_result(self, accumulator: ACC) -> OUT_co: ...
    def merge(self, a: ACC, b: ACC) -> ACC: ...


@dataclass(frozen=True)
class StateDescriptor:
    name: str
    ttl: StateTtlConfig | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class ValueStateDescriptor(StateDescriptor):
    serde: Serde[Any] = _serdes.JSON
    default: Any = None


@dataclass(frozen=True)
class ListStateDescriptor(StateDescriptor):
    serde: Serde[Any] = _serdes.JSON


@dataclass(frozen=True)
class MapStateDescriptor(StateDescriptor):
    key_serde: Serde[Any] = _serdes.JSON
    value_serde: Serde[Any] = _serdes.JSON


@dataclass(frozen=True)
class ReducingStateDescriptor(StateDescriptor):
    reduce_fn: Callable[[Any, Any], Any] = field(default=lambda a, b: b)
    serde: Serde[Any] = _serdes.JSON


@dataclass(frozen=True)
class AggregatingStateDescriptor(StateDescriptor):
    aggregate_function: Any = None
    accumulator_serde: Serde[Any] = _serdes.JSON


class KeyContext:
    """The current key (serialized) and processing-time clock of a task."""

    __slots__ = ("key_bytes", "clock")

    def __init__(self, clock: Callable[[], int]) -> None:
        self.key_bytes: bytes = b""
        self.clock = clock


class _TtlCodec:
    """Wraps serialized values with their expiry time when TTL is on."""

    __slots__ = ("ttl_ms", "update_on_read", "clock")

    def __init__(self, ttl: StateTtlConfig | None, clock: Callable[[], int]) -> None:
        self.ttl_ms = ttl.ttl_ms if ttl else 0
        self.update_on_read = ttl.update_on_read if ttl else False
        self.clock = clock

    def expiry(self) -> int:
        """``now + ttl``, saturated to int64 (Flink's ``TtlUtils.getExpirationTimestamp``)."""
        exp = self.clock() + self.ttl_ms
        return MAX_TIMESTAMP if exp > MAX_TIMESTAMP else MIN_TIMESTAMP if exp < MIN_TIMESTAMP else exp

    def wrap(self, raw: bytes) -> bytes:
        if not self.ttl_ms:
            return raw
        return _pack_exp(self.expiry()) + raw

    def unwrap(self, stored: bytes | None) -> bytes | None:
        """The payload, or None when absent or expired."""
        if stored is None or not self.ttl_ms:
            return stored
        if _EXP.unpack_from(stored)[0] <= self.clock():
            return None
        return stored[8:]


class _KeyedState:
    def __init__(self, store: Store, keyctx: KeyContext, ttl: StateTtlConfig | None) -> None:
        self._store = store
        self._k = keyctx
        self._ttl = _TtlCodec(ttl, keyctx.clock)

    def _key(self) -> bytes:
        return key_prefix(self._k.key_bytes)

    def _read(self, key: bytes) -> bytes | None:
        stored = self._store.get(key)
        raw = self._ttl.unwrap(stored)
        if raw is None and stored is not None:
            self._store.delete(key)  # expired: clean up lazily (and in the changelog)
        elif raw is not None and self._ttl.update_on_read:
            self._store.put(key, self._ttl.wrap(raw))
        return raw

    def _write(self, key: bytes, raw: bytes) -> None:
        self._store.put(key, self._ttl.wrap(raw))

    def clear(self) -> None:
        """Remove the current key's value."""
        self._store.delete(self._key())


class ValueState(_KeyedState, Generic[T]):
    """One value per key."""

    def __init__(self, store: Store, keyctx: KeyContext, desc: ValueStateDescriptor) -> None:
        super().__init__(store, keyctx, desc.ttl)
        self._ser = desc.serde.serialize
        self._de = desc.serde.deserialize
        self._default = desc.default

    def value(self) -> T:
        raw = self._read(self._key())
        return self._default if raw is None else self._de(raw)

    def update(self, value: T) -> None:
        if value is None:
            self.clear()
        else:
            self._write(self._key(), self._ser(value))


class ListState(_KeyedState, Generic[T]):
    """A list per key (with TTL: each element expires on its own, see the module docstring)."""

    def __init__(self, store: Store, keyctx: KeyContext, desc: ListStateDescriptor) -> None:
        super().__init__(store, keyctx, desc.ttl)
        self._ser = desc.serde.serialize
        self._de = desc.serde.deserialize
        self._ttl_ms = self._ttl.ttl_ms

    def get(self) -> list[T]:
        if self._ttl_ms:
            return self._ttl_get()
        raw = self._store.get(self._key())
        return [] if raw is None else [self._de(b) for b in decode_list(raw)]

    def add(self, value: T) -> None:
        if self._ttl_ms:
            self._ttl_append([self._ser(value)])
            return
        key = self._key()
        raw = self._store.get(key) or b""
        self._store.put(key, raw + encode_list([self._ser(value)]))

    def add_all(self, values: list[T]) -> None:
        if not values:
            return
        if self._ttl_ms:
            self._ttl_append([self._ser(v) for v in values])
            return
        key = self._key()
        raw = self._store.get(key) or b""
        self._store.put(key, raw + encode_list([self._ser(v) for v in values]))

    def update(self, values: list[T]) -> None:
        if not values:
            self.clear()
        elif self._ttl_ms:
            exp = _pack_exp(self._ttl.expiry())
            self._store.put(self._key(), _TTL_LIST + encode_list([exp + self._ser(v) for v in values]))
        else:
            self._store.put(self._key(), encode_list([self._ser(v) for v in values]))

    def decode_stored(self, stored: bytes) -> list[T]:
        """The unexpired values of a stored list (any layout), without touching the store."""
        if not self._ttl_ms:
            return [self._de(b) for b in decode_list(stored)]
        now = self._k.clock()
        return [self._de(b) for exp, b in _ttl_entries(stored) if exp > now]

    # --- per-element TTL ---------------------------------------------------------------------------

    def _ttl_get(self) -> list[T]:
        key = self._key()
        stored = self._store.get(key)
        if stored is None:
            return []
        now = self._k.clock()
        entries = _ttl_entries(stored)
        live = [(exp, b) for exp, b in entries if exp > now]
        if not live:
            self._store.delete(key)  # every element expired: clean up lazily (and in the changelog)
            return []
        if self._ttl.update_on_read:
            exp = self._ttl.expiry()
            live = [(exp, b) for _, b in live]  # OnReadAndWrite: the elements read are refreshed
            self._store.put(key, _ttl_encode(live))
        elif len(live) < len(entries):
            self._store.put(key, _ttl_encode(live))  # drop the expired elements
        return [self._de(b) for _, b in live]

    def _ttl_append(self, payloads: list[bytes]) -> None:
        """Append elements stamped ``now + ttl``; the elements already there keep their expiry."""
        key = self._key()
        exp = _pack_exp(self._ttl.expiry())
        new = encode_list([exp + p for p in payloads])
        stored = self._store.get(key)
        if stored is None:
            self._store.put(key, _TTL_LIST + new)
            return
        # Expiries are stamped in processing-time order, so the first element expires first: while
        # it is live, appending is a byte concatenation (as without TTL).
        if stored[0] == _TTL_LIST_BYTE and len(stored) >= 13 and _unpack_exp(stored, 5)[0] > self._k.clock():
            self._store.put(key, stored + new)
            return
        now = self._k.clock()
        live = [(e, b) for e, b in _ttl_entries(stored) if e > now]  # also converts the old layout
        self._store.put(key, (_ttl_encode(live) if live else _TTL_LIST) + new)


def _ttl_entries(stored: bytes) -> list[tuple[int, bytes]]:
    """``(expiry, item)`` of each element of a list stored with TTL, in order, in either layout."""
    if stored[0] == _TTL_LIST_BYTE:
        return [(_unpack_exp(b)[0], b[8:]) for b in decode_list(stored[1:])]
    exp = _unpack_exp(stored)[0]  # written before per-element TTL: one expiry for the whole list
    return [(exp, b) for b in decode_list(stored[8:])]


def _ttl_encode(entries: list[tuple[int, bytes]]) -> bytes:
    return _TTL_LIST + encode_list([_pack_exp(exp) + b for exp, b in entries])


class MapState(_KeyedState, Generic[T]):
    """A map per key; entries are separate store entries (and changelog records)."""

    def __init__(self, store: Store, keyctx: KeyContext, desc: MapStateDescriptor) -> None:
        super().__init__(store, keyctx, desc.ttl)
        self._kser = desc.key_serde.serialize
        self._kde = desc.key_serde.deserialize
        self._vser = desc.value_serde.serialize
        self._vde = desc.value_serde.deserialize

    def get(self, user_key: Any, default: Any = None) -> Any:
        raw = self._read(self._key() + self._kser(user_key))
        return default if raw is None else self._vde(raw)

    def put(self, user_key: Any, value: Any) -> None:
        self._write(self._key() + self._kser(user_key), self._vser(value))

    def put_all(self, entries: dict[Any, Any]) -> None:
        for k, v in entries.items():
            self.put(k, v)

    def remove(self, user_key: Any) -> None:
        self._store.delete(self._key() + self._kser(user_key))

    def contains(self, user_key: Any) -> bool:
        return self._read(self._key() + self._kser(user_key)) is not None

    def items(self) -> Iterator[tuple[Any, Any]]:
        prefix = self._key()
        n = len(prefix)
        now_entries = list(self._store.iter_prefix(prefix))
        refresh = self._ttl.update_on_read
        for k, stored in now_entries:
            raw = self._ttl.unwrap(stored)
            if raw is None:
                self._store.delete(k)
                continue
            if refresh:
                self._store.put(k, self._ttl.wrap(raw))  # OnReadAndWrite: each entry read is refreshed
            yield self._kde(k[n:]), self._vde(raw)

    def keys(self) -> Iterator[Any]:
        return (k for k, _ in self.items())

    def values(self) -> Iterator[Any]:
        return (v for _, v in self.items())

    def is_empty(self) -> bool:
        return next(iter(self.items()), None) is None

    def clear(self) -> None:
        for k, _ in list(self._store.iter_prefix(self._key())):
            self._store.delete(k)


class ReducingState(_KeyedState, Generic[T]):
    """``add(v)`` folds ``v`` into the key's value with ``reduce_fn(current, v)``."""

    def __init__(self, store: Store, keyctx: KeyContext, desc: ReducingStateDescriptor) -> None:
        super().__init__(store, keyctx, desc.ttl)
        self._fn = desc.reduce_fn
        self._ser = desc.serde.serialize
        self._de = desc.serde.deserialize

    def get(self) -> T | None:
        raw = self._read(self._key())
        return None if raw is None else self._de(raw)

    def add(self, value: T) -> None:
        key = self._key()
        raw = self._read(key)
        new = value if raw is None else self._fn(self._de(raw), value)
        self._write(key, self._ser(new))


class AggregatingState(_KeyedState, Generic[T, R]):
    """``add(v)`` folds ``v`` into an accumulator; ``get()`` returns ``get_result(acc)``."""

    def __init__(self, store: Store, keyctx: KeyContext, desc: AggregatingStateDescriptor) -> None:
        super().__init__(store, keyctx, desc.ttl)
        if desc.aggregate_function is None:
            raise ValueError(f"AggregatingStateDescriptor {desc.name!r} needs an aggregate_function")
        self._fn = desc.aggregate_function
        self._ser = desc.accumulator_serde.serialize
        self._de = desc.accumulator_serde.deserialize

    def get(self) -> R | None:
        raw = self._read(self._key())
        return None if raw is None else self._fn.get_result(self._de(raw))

    def add(self, value: T) -> None:
        key = self._key()
        raw = self._read(key)
        acc = self._fn.create_accumulator() if raw is None else self._de(raw)
        self._write(key, self._ser(self._fn.add(value, acc)))

    def get_accumulator(self) -> Any:
        """The key's accumulator itself (None when there is none), e.g. to merge it elsewhere."""
        raw = self._read(self._key())
        return None if raw is None else self._de(raw)

    def merge_accumulator(self, acc: Any) -> None:
        """Merge ``acc`` into the key's accumulator (``aggregate_function.merge``), as Flink's
        ``mergeNamespaces`` of aggregating state does."""
        key = self._key()
        raw = self._read(key)
        self._write(key, self._ser(acc if raw is None else self._fn.merge(self._de(raw), acc)))


def make_state(desc: StateDescriptor, store: Store, keyctx: KeyContext) -> Any:
    """The state object for a descriptor."""
    if isinstance(desc, ValueStateDescriptor):
        return ValueState(store, keyctx, desc)
    if isinstance(desc, ListStateDescriptor):
        return ListState(store, keyctx, desc)
    if isinstance(desc, MapStateDescriptor):
        return MapState(store, keyctx, desc)
    if isinstance(desc, ReducingStateDescriptor):
        return ReducingState(store, keyctx, desc)
    if isinstance(desc, AggregatingStateDescriptor):
        return AggregatingState(store, keyctx, desc)
    raise TypeError(f"unknown state descriptor {desc!r}")

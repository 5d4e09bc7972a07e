"""Serializers/deserializers for record keys and values.

A :class:`Serde` turns Python objects into bytes and back. ``None`` always maps to ``None``
(Kafka's null key / tombstone value). Built-ins::

    from kstreamlet import serdes
    serdes.BYTES, serdes.STR, serdes.JSON, serdes.INT64, serdes.pydantic(MyModel)
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Generic, TypeVar

import orjson

T = TypeVar("T")


class SerdeError(ValueError):
    """A record's key or value could not be (de)serialized."""


class Serde(Generic[T]):
    """A named pair of functions ``serialize(obj) -> bytes`` and ``deserialize(bytes) -> obj``."""

    __slots__ = ("name", "serialize", "deserialize", "identity")

    def __init__(self, name: str, serialize: Callable[[T], bytes], deserialize: Callable[[bytes], T], identity: bool = False):
        self.name = name
        self.serialize = serialize
        self.deserialize = deserialize
        #: True when both directions are the identity on bytes (lets the hot path skip a call).
        self.identity = identity

    def for_topic(self, topic: str, is_key: bool) -> "Serde[T]":
        """This serde as a source or sink of ``topic`` uses it (``is_key``: for the record key).
        Plain serdes ignore the topic; Schema Registry serdes (kstreamlet.serdes_registry) derive
        their subject from it."""
        return self

    def __repr__(self) -> str:
        return f"Serde({self.name})"


def _ident(b: Any) -> Any:
    return b


def _str_ser(s: str) -> bytes:
    return s.encode() if s is not None else None  # type: ignore[return-value]


def _str_de(b: bytes) -> str:
    return b.decode() if b is not None else None  # type: ignore[return-value]


def _json_ser(o: Any) -> bytes:
    return orjson.dumps(o) if o is not None else None  # type: ignore[return-value]


def _json_de(b: bytes) -> Any:
    return orjson.loads(b) if b is not None else None


_I64 = struct.Struct(">q")


def _i64_ser(i: int) -> bytes:
    return _I64.pack(i) if i is not None else None  # type: ignore[return-value]


def _i64_de(b: bytes) -> int:
    return _I64.unpack(b)[0] if b is not None else None  # type: ignore[return-value]


BYTES: Serde[bytes] = Serde("bytes", _ident, _ident, identity=True)
STR: Serde[str] = Serde("str", _str_ser, _str_de)
JSON: Serde[Any] = Serde("json", _json_ser, _json_de)
#: Big-endian signed 64-bit integers (Kafka's LongSerializer format).
INT64: Serde[int] = Serde("int64", _i64_ser, _i64_de)


def pydantic(model: type[T]) -> Serde[T]:
    """A JSON serde for a pydantic v2 model class.

    >>> from pydantic import BaseModel
    >>> class Sensor(BaseModel):
    ...     id: str
    ...     temperature: float
    >>> s = pydantic(Sensor)
    >>> s.deserialize(s.serialize(Sensor(id="a", temperature=1.5)))
    Sensor(id='a', temperature=1.5)
    """
    validate = model.model_validate_json  # type: ignore[attr-defined]

    def ser(o: T) -> bytes:
        if o is None:
            return None  # type: ignore[return-value]
        return o.model_dump_json().encode()  # type: ignore[attr-defined]

    def de(b: bytes) -> T:
        return validate(b) if b is not None else None  # type: ignore[no-any-return]

    return Serde(f"pydantic:{model.__name__}", ser, de)


def resolve(serde: "Serde[Any] | str | None", default: "Serde[Any]") -> "Serde[Any]":
    """Accept a Serde, a built-in name (``"bytes"``, ``"str"``, ``"json"``, ``"int64"``) or None."""
    if serde is None:
        return default
    if isinstance(serde, Serde):
        return serde
    named: dict[str, Serde[Any]] = {"bytes": BYTES, "str": STR, "json": JSON, "int64": INT64}
    if isinstance(serde, str) and serde in named:
        return named[serde]
    if isinstance(serde, type) and hasattr(serde, "model_validate_json"):
        return pydantic(serde)
    raise ValueError(f"unknown serde {serde!r}; use one of {sorted(named)}, a pydantic model class or a Serde")

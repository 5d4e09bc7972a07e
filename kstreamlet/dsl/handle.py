"""What the builders of :mod:`kstreamlet.dsl` (joins, windows, broadcast) need of a stream handle.

They take a :class:`Handle` and hand back the stream type it derives (``S``), so they never
import :class:`~kstreamlet.dsl.stream.Stream` (which imports them) and still return the real type.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar

from kstreamlet.eventtime import WatermarkStrategy
from kstreamlet.serdes import Serde
from kstreamlet.topology.builder import TopologyBuilder
from kstreamlet.topology.nodes import Node

S = TypeVar("S", covariant=True)


class Handle(Protocol[S]):
    """A stream handle whose derived (non-keyed) streams are ``S``."""

    @property
    def key_serde(self) -> Serde[Any]: ...
    @property
    def value_serde(self) -> Serde[Any]: ...
    @property
    def watermarks(self) -> WatermarkStrategy | None: ...
    @property
    def is_keyed(self) -> bool: ...
    @property
    def _builder(self) -> TopologyBuilder: ...
    @property
    def _attach(self) -> Callable[[Node], Node]: ...

    def _then(self, node: Node, key_serde: Serde[Any] | None = None, value_serde: Serde[Any] | None = None) -> S: ...

    def _derive_keyed(self, node: Node) -> "Handle[S]": ...

    def key_by(self, fn: Callable[[Any], Any], key_serde: Serde[Any] | str | None = None,
               value_serde: Serde[Any] | str | None = None, partitions: int | None = None,
               name: str | None = None) -> "Handle[S]": ...


__all__ = ["Handle"]

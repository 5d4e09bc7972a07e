"""Storage backends behind state stores: in-memory and RocksDB (``state/rocksdb.py``).

A backend holds one store of one task (partition). Writes arrive only as committed
batches (see ``state/store.py``), each with the changelog offset it reflects, applied
atomically, so the local data and its offset never disagree.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, Sequence

#: Reserved key holding the changelog offset; user keys are length-prefixed or timestamp
#: prefixed and can never start with eight 0xff bytes.
OFFSET_KEY = b"\xff" * 8 + b"kstreamlet:changelog-offset"


class Backend(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def write(self, batch: Mapping[bytes, bytes | None], offset: int | None) -> None:
        """Apply puts (value) and deletes (None) and the changelog offset atomically."""

    def restore(self, records: Sequence[Any], offset: int) -> None:
        """Apply changelog messages in order (``key()``; ``value()``, None deletes; a later one of
        a key wins) and the changelog offset atomically: the restore path's bulk write."""

    def iter_from(self, start: bytes, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` (``end`` None: unbounded) in key order (the offset key excluded)."""

    def changelog_offset(self) -> int | None: ...

    def has_data(self) -> bool: ...

    def close(self) -> None: ...

    def destroy(self) -> None:
        """Close and delete all local data."""


class MemoryBackend:
    """A dict; for tests and small, fast-restoring state."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, batch: Mapping[bytes, bytes | None], offset: int | None) -> None:
        data = self._data
        for k, v in batch.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
        if offset is not None:
            self._offset = offset

    def restore(self, records: Sequence[Any], offset: int) -> None:
        data = self._data
        for m in records:
            v = m.value()
            if v is None:
                data.pop(m.key(), None)
            else:
                data[m.key()] = v
        self._offset = offset

    def iter_from(self, start: bytes, end: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        for k in sorted(k for k in self._data if k >= start and (end is None or k < end)):
            v = self._data.get(k)
            if v is not None:
                yield k, v

    def changelog_offset(self) -> int | None:
        return self._offset

    def has_data(self) -> bool:
        return bool(self._data)

    def close(self) -> None:
        pass

    def destroy(self) -> None:
        self._data.clear()
        self._offset = None

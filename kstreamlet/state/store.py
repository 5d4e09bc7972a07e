"""A state store of one task: a write buffer per checkpoint over a backend, with a changelog.

Reads see the checkpoint's own uncommitted writes first. At ``prepare_commit`` every
buffered write is sent to the store's changelog topic (partition = the task's
partition) *inside the checkpoint's Kafka transaction*; after the commit succeeds the
buffer is applied to the backend in one batch together with the changelog offset of its
last record; on abort it is dropped. So local state never runs ahead of Kafka.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Iterator, Sequence

from kstreamlet.errors import RecordProductionError
from kstreamlet.state.backend import Backend
from kstreamlet.state.codec import prefix_end

_MISSING = object()

#: ``send(topic, key, value, partition, on_delivery)``; value None is a tombstone.
ChangelogSend = Callable[[str, bytes, "bytes | None", int, "Callable[[Any, Any], None] | None"], None]


class Store:
    """Key/value bytes store of one task, participating in the checkpoint."""

    def __init__(self, name: str, partition: int, backend: Backend, changelog_topic: str | None,
                 send: ChangelogSend | None, end_offset: Callable[[str, int], int | None] | None = None,
                 backend_factory: Callable[[], Backend] | None = None) -> None:
        self.name = name
        self.partition = partition
        self.backend = backend
        self._backend_factory = backend_factory
        self.changelog_topic = changelog_topic
        self._send = send
        self.buffer: dict[bytes, bytes | None] = {}
        # Sorted keys of the buffer, so range scans (windows, joins, timers) cost O(log n + k)
        # instead of sorting the whole buffer on every scan.
        self._sorted: list[bytes] = []
        self._last_offset: int | None = None
        self._listeners: list[Callable[[], None]] = []
        # At-least-once producers report only errors, so the offset comes from the log end instead
        # (the task is the only writer of its changelog partition).
        self._end_offset = end_offset
        #: Largest key + value the changelog topic accepts (set by the member; None = unchecked). A
        #: larger write raises RecordProductionError at put(), while its input record is known, so
        #: the error policy handles that record instead of the checkpoint failing at commit.
        self.max_record_bytes: int | None = None

    # --- reads and writes ------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        v = self.buffer.get(key, _MISSING)
        if v is not _MISSING:
            return v  # type: ignore[return-value]
        return self.backend.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        limit = self.max_record_bytes
        if limit is not None and len(key) + len(value) > limit:
            raise RecordProductionError(
                self.changelog_topic or self.name, "MSG_SIZE_TOO_LARGE",
                f"state write of {len(key) + len(value)} bytes to store {self.name} exceeds the {limit} bytes "
                f"its changelog {self.changelog_topic} accepts")
        if key not in self.buffer:
            bisect.insort(self._sorted, key)
        self.buffer[key] = value

    def delete(self, key: bytes) -> None:
        if key not in self.buffer:
            bisect.insort(self._sorted, key)
        self.buffer[key] = None

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in key order, uncommitted writes merged in."""
        return self.iter_range(prefix, prefix_end(prefix))

    def iter_range(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` (end None = unbounded), merged with the buffer."""
        lo = bisect.bisect_left(self._sorted, start)
        hi = len(self._sorted) if end is None else bisect.bisect_left(self._sorted, end)
        if lo == hi:  # nothing buffered in the range: the backend's entries as they are
            yield from self.backend.iter_from(start, end)
            return
        buf = self.buffer
        pending = [(k, buf[k]) for k in self._sorted[lo:hi]]
        i = 0
        for k, v in self.backend.iter_from(start, end):
            while i < len(pending) and pending[i][0] < k:
                if pending[i][1] is not None:
                    yield pending[i]  # type: ignore[misc]
                i += 1
            if i < len(pending) and pending[i][0] == k:
                if pending[i][1] is not None:
                    yield pending[i]  # type: ignore[misc]
                i += 1
                continue
            yield k, v
        while i < len(pending):
            if pending[i][1] is not None:
                yield pending[i]  # type: ignore[misc]
            i += 1

    def on_abort(self, fn: Callable[[], None]) -> None:
        """Register a callback run after an abort or a rollback of writes (caches above the store
        rebuild themselves)."""
        self._listeners.append(fn)

    # --- undoing the writes of one failed call (timers) ----------------------------------------------

    def track_writes(self, log: list[tuple["Store", bytes, Any]]) -> None:
        """Until :meth:`untrack_writes`, append ``(store, key, previous buffered value)`` to ``log``
        before each write, so :meth:`rollback_writes` can undo a failed call's writes without
        dropping the rest of the checkpoint. Instance attributes shadow put/delete only meanwhile:
        the usual write path pays nothing."""
        buf_get = self.buffer.get
        put, delete = Store.put, Store.delete

        def tracked_put(key: bytes, value: bytes) -> None:
            log.append((self, key, buf_get(key, _MISSING)))
            put(self, key, value)

        def tracked_delete(key: bytes) -> None:
            log.append((self, key, buf_get(key, _MISSING)))
            delete(self, key)

        self.put = tracked_put  # type: ignore[method-assign]
        self.delete = tracked_delete  # type: ignore[method-assign]

    @property
    def tracking(self) -> bool:
        """Between :meth:`track_writes` and :meth:`untrack_writes` (a guarded timer call runs)."""
        return "put" in self.__dict__

    def untrack_writes(self) -> None:
        self.__dict__.pop("put", None)
        self.__dict__.pop("delete", None)

    @staticmethod
    def rollback_writes(entries: list[tuple["Store", bytes, Any]]) -> None:
        """Undo tracked writes (newest first) and tell the touched stores' listeners."""
        touched: dict[int, Store] = {}
        for store, key, old in reversed(entries):
            if old is _MISSING:
                if store.buffer.pop(key, _MISSING) is not _MISSING:
                    i = bisect.bisect_left(store._sorted, key)
                    if i < len(store._sorted) and store._sorted[i] == key:
                        del store._sorted[i]
            else:
                store.buffer[key] = old
            touched[id(store)] = store
        for store in touched.values():
            for fn in store._listeners:
                fn()

    # --- checkpoint participation ------------------------------------------------------------------

    def prepare_commit(self) -> None:
        if not self.buffer or self._send is None or self.changelog_topic is None:
            return
        send, topic, part = self._send, self.changelog_topic, self.partition
        items = list(self.buffer.items())
        for k, v in items[:-1]:
            send(topic, k, v, part, None)
        # Only the last record reports its offset: per-record callbacks would cost on the hot path.
        k, v = items[-1]
        send(topic, k, v, part, self._delivered)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            self._last_offset = msg.offset()

    def committed(self) -> None:
        if self.buffer:
            if self._last_offset is None and self._end_offset is not None and self.changelog_topic:
                end = self._end_offset(self.changelog_topic, self.partition)
                self._last_offset = end - 1 if end is not None else None
            self.backend.write(self.buffer, self._last_offset)
            self.buffer = {}
            self._sorted = []
        self._last_offset = None

    def aborted(self) -> None:
        self.buffer = {}
        self._sorted = []
        self._last_offset = None
        for fn in self._listeners:
            fn()

    # --- restoration -------------------------------------------------------------------------------

    def restore(self, records: Sequence[Any], last_offset: int) -> None:
        """Apply changelog messages (``key()``, ``value()``; a None value deletes) in order, with
        ``last_offset``, as one atomic write."""
        self.backend.restore(records, last_offset)

    def reset(self) -> None:
        """Delete all local data (it will be rebuilt from the changelog)."""
        self.backend.destroy()
        if self._backend_factory is not None:
            self.backend = self._backend_factory()
        self.buffer = {}
        self._sorted = []

    def close(self) -> None:
        self.backend.close()

"""Timers of a keyed operator in one task: event-time and processing-time.

Timers live in a state store (so they are changelogged and survive crashes and
rebalances) keyed ``kind(1) | timestamp(8, big-endian) | key``; a heap in memory orders
the ones to fire. A timer is registered at most once per (key, timestamp) (Flink
semantics). Firing deletes it in the same checkpoint as the outputs of ``on_timer``, so
under exactly-once each timer fires exactly once. The deletion happens before the call: when
``on_timer`` fails, the task's timer guard undoes only the call's own writes, so under the
``dlq``/``skip`` policies the timer counts as fired, and under ``fail`` the aborted checkpoint
takes the deletion with it (the timer fires again after a restart).

Timer timestamps are int64 ms: one outside that range (``max_timestamp + lateness``, ``now +
delay`` near the end of time) saturates to ``MIN_TIMESTAMP`` / ``MAX_TIMESTAMP``
(:func:`kstreamlet.state.codec.saturate`), so ``on_timer`` gets the saturated time; deleting
with the same out-of-range time deletes that timer.
"""

from __future__ import annotations

import heapq
import struct
from typing import Callable

from kstreamlet.state.codec import BIAS, MAX_TIMESTAMP, MIN_TIMESTAMP, TIMESTAMP
from kstreamlet.state.store import Store

_TS = struct.Struct(">q")
EVENT = b"e"
PROC = b"p"
_pack_ts = TIMESTAMP.pack  # biased (state/codec.py), so negative timestamps sort correctly as bytes


def _entry(kind: bytes, ts: int, key: bytes) -> bytes:
    return kind + _pack_ts(ts + BIAS) + key


class TimerService:
    """What ``ctx.timers`` offers inside a keyed process function."""

    def __init__(self, store: Store, current_key: Callable[[], bytes], watermark: Callable[[], int],
                 clock: Callable[[], int]) -> None:
        self._store = store
        self._current_key = current_key
        self._watermark = watermark
        self._clock = clock
        self._heaps: dict[bytes, list[tuple[int, bytes]]] = {EVENT: [], PROC: []}
        self._live: set[tuple[bytes, int, bytes]] = set()
        self.loaded = False
        store.on_abort(self.reload)

    # --- user API ------------------------------------------------------------------------------

    def current_watermark(self) -> int:
        return self._watermark()

    def current_processing_time(self) -> int:
        return self._clock()

    def register_event_time(self, ts: int) -> None:
        """Fire ``on_timer(ts)`` for the current key once the watermark passes ``ts``."""
        self._register(EVENT, int(ts))

    def register_processing_time(self, ts: int) -> None:
        """Fire ``on_timer(ts)`` for the current key once wall-clock time reaches ``ts`` (ms)."""
        self._register(PROC, int(ts))

    def delete_event_time(self, ts: int) -> None:
        self._delete(EVENT, int(ts), self._current_key())

    def delete_processing_time(self, ts: int) -> None:
        self._delete(PROC, int(ts), self._current_key())

    # --- runtime ----------------------------------------------------------------------------------

    def _register(self, kind: bytes, ts: int) -> None:
        if ts > MAX_TIMESTAMP or ts < MIN_TIMESTAMP:
            ts = MAX_TIMESTAMP if ts > MAX_TIMESTAMP else MIN_TIMESTAMP  # saturate (codec.saturate, inlined)
        self._ensure_loaded()
        key = self._current_key()
        t = (kind, ts, key)
        if t in self._live:
            return
        self._live.add(t)
        heapq.heappush(self._heaps[kind], (ts, key))
        self._store.put(_entry(kind, ts, key), b"")

    def _delete(self, kind: bytes, ts: int, key: bytes) -> None:
        if ts > MAX_TIMESTAMP or ts < MIN_TIMESTAMP:
            ts = MAX_TIMESTAMP if ts > MAX_TIMESTAMP else MIN_TIMESTAMP
        self._ensure_loaded()
        t = (kind, ts, key)
        if t in self._live:
            self._live.discard(t)  # the heap entry is skipped lazily
            self._store.delete(_entry(kind, ts, key))

    def _ensure_loaded(self) -> None:
        if not self.loaded:
            self.reload()

    def reload(self) -> None:
        """Rebuild the in-memory queues from the store (after restore or an aborted checkpoint)."""
        self._heaps = {EVENT: [], PROC: []}
        self._live = set()
        for k, _ in self._store.iter_range(b"", None):
            kind, ts, key = k[:1], TIMESTAMP.unpack_from(k, 1)[0] - BIAS, k[9:]
            if kind in self._heaps:
                self._live.add((kind, ts, key))
                self._heaps[kind].append((ts, key))
        for h in self._heaps.values():
            heapq.heapify(h)
        self.loaded = True

    def next_due(self, kind: bytes) -> int | None:
        self._ensure_loaded()
        h = self._heaps[kind]
        while h and (kind, h[0][0], h[0][1]) not in self._live:
            heapq.heappop(h)
        return h[0][0] if h else None

    def fire(self, kind: bytes, up_to: int, on_timer: Callable[[int, bytes], None]) -> int:
        """Fire every timer of ``kind`` with timestamp <= ``up_to`` in timestamp order."""
        self._ensure_loaded()
        fired = 0
        while True:
            # Looked up per timer: a failing on_timer's rolled-back writes reload() the heaps.
            h = self._heaps[kind]
            if not h or h[0][0] > up_to:
                break
            ts, key = heapq.heappop(h)
            t = (kind, ts, key)
            if t not in self._live:
                continue
            self._live.discard(t)
            self._store.delete(_entry(kind, ts, key))
            on_timer(ts, key)
            fired += 1
        return fired


__all__ = ["TimerService", "EVENT", "PROC", "_TS"]

"""The record cache of a running aggregation (Kafka Streams' ``statestore.cache.max.bytes``).

A :class:`RecordCache` sits between one keyed aggregation of one task and its store. Each record's
new accumulator goes into the cache (a Python object, not serialized); reads of a key see the
cached value first (read-through). The latest value per key is written to the store — and so to
the changelog — and forwarded downstream only when

- the checkpoint commits: the task runs its flushers first in ``prepare_commit``, before the
  watermark records, the participants (two-phase sinks) and the stores' changelogs, so everything a
  flush causes downstream (a sink, another cached aggregation of the same task) is in the same
  transaction; or
- the cache is over its size: least recently updated entries are flushed (evicted) one by one
  until it fits, while the record that made it overflow is processed.

So with the cache on, downstream sees at most one update per key per checkpoint (the last one, with
the timestamp of the key's last record) instead of one per record. An abort discards the cache with
the rest of the uncommitted checkpoint (the task's participants hear of it); closing a task drops it
(a revoked or stopping task's last checkpoint has flushed it). Flushed entries stay as clean entries
(read caching of hot keys) until evicted; an abort drops them too, as the store's buffer they went
to is dropped.

Size: an entry counts ``len(key bytes) + len(serialized value) + ENTRY_OVERHEAD`` bytes, the value
measured when the entry enters the cache and again at each flush (an estimate between flushes).
``record_cache_max_bytes`` (0 = off) is the budget of the whole process, split evenly between the
caches of its live tasks (as Kafka Streams splits it between a thread's tasks); an operator's
``cache_max_bytes`` is that operator's own limit per task instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from confluent_kafka import KafkaException

from kstreamlet.errors import ProcessingError
from kstreamlet.runtime.checkpoint import AbortCheckpoint, FatalClientError
from kstreamlet.state.codec import key_prefix
from kstreamlet.state.store import Store

#: Bytes counted per entry besides its key and value (the dict entry and its list).
ENTRY_OVERHEAD = 64


class _Budget:
    """``record_cache_max_bytes`` of the process, split between the live caches using it."""

    def __init__(self) -> None:
        self.caches: set[int] = set()

    def share(self, total: int) -> int:
        return total // max(1, len(self.caches))


_budget = _Budget()


class RecordCache:
    """The cache of one aggregation operator in one task.

    ``entries``: key bytes -> ``[key, value, timestamp, dirty, size, record]``, least recently
    updated first. ``flush`` writes dirty entries to ``store`` (``key_prefix(key bytes) |
    serialized value``, the ValueState layout) and forwards ``(key, value, timestamp)`` with
    ``forward``, in the record context of the input record that last updated the entry (``record``:
    the task's message then, as Kafka Streams' cache keeps each entry's record context): a flushed
    output carries that record's headers, and ``ctx.topic()``/``ctx.offset()`` downstream are its.
    """

    __slots__ = ("store", "serialize", "forward", "on_error", "entries", "size", "own_limit", "total",
                 "dirty", "_shared", "task")

    def __init__(self, store: Store, serialize: Callable[[Any], bytes], own_limit: int | None, total: int,
                 on_error: Callable[[bytes, int, BaseException], None], task: Any = None) -> None:
        #: The task whose current input record (``msg``) an update comes from (None: no record context).
        self.task = task
        self.store = store
        self.serialize = serialize
        #: Set by the operator with its context's forward on its first record.
        self.forward: Callable[[Any, Any, int], None] | None = None
        self.on_error = on_error
        self.entries: OrderedDict[bytes, list[Any]] = OrderedDict()
        self.size = 0
        self.own_limit = own_limit
        self.total = total
        self.dirty = 0
        #: Counted in the process's budget: from the first entry (a cache opened only to record the
        #: topology's stores never is) until close().
        self._shared = False

    @property
    def limit(self) -> int:
        return self.own_limit if self.own_limit is not None else _budget.share(self.total)

    def get(self, key_bytes: bytes) -> list[Any] | None:
        """The key's entry (``[key, value, ts, dirty, size, record]``) or None."""
        return self.entries.get(key_bytes)

    def put(self, key_bytes: bytes, key: Any, value: Any, ts: int, entry: list[Any] | None) -> None:
        """The key's new value (``entry``: what :meth:`get` returned for it), then evict while over the limit."""
        task = self.task
        record = None if task is None or task.firing_timers else task.msg
        if entry is not None:
            entry[1] = value
            entry[2] = ts
            entry[5] = record
            if not entry[3]:
                entry[3] = True
                self.dirty += 1
            self.entries.move_to_end(key_bytes)
            return
        if not self._shared and self.own_limit is None:
            self._shared = True
            _budget.caches.add(id(self))
        size = len(key_bytes) + (0 if value is None else len(self.serialize(value))) + ENTRY_OVERHEAD
        self.entries[key_bytes] = [key, value, ts, True, size, record]
        self.dirty += 1
        self.size += size
        # Not while a guarded timer call runs (an operator upstream in the task fires timers): a
        # failing call undoes its store writes, which would drop an evicted value the cache no longer
        # holds. The cache stays over its limit until the next record or the checkpoint.
        if self.size > self.limit and not self.store.tracking:
            self.evict()

    def evict(self) -> None:
        """Flush (if dirty) and drop least recently updated entries until the cache fits its limit."""
        limit = self.limit
        entries = self.entries
        while self.size > limit and entries:
            kb, e = entries.popitem(last=False)
            self.size -= e[4]
            if e[3]:
                self.dirty -= 1
                self._write(kb, e)

    def _write(self, kb: bytes, e: list[Any]) -> None:
        if e[1] is None:  # as ValueState.update(None): the key's value is removed
            raw = b""
            self.store.delete(key_prefix(kb))
        else:
            raw = self.serialize(e[1])
            self.store.put(key_prefix(kb), raw)
        size = len(kb) + len(raw) + ENTRY_OVERHEAD
        if kb in self.entries:  # not when evicted
            self.size += size - e[4]
        e[4] = size
        fwd = self.forward
        if fwd is not None:
            task = self.task
            if task is None:
                fwd(e[0], e[1], e[2])
                return
            # Forwarded in the entry's record context (headers, ctx.topic()/offset()), not the
            # context of whatever record the task saw last; none for an update a timer made.
            msg, firing = task.msg, task.firing_timers
            task.msg, task.firing_timers = e[5], False
            try:
                fwd(e[0], e[1], e[2])
            finally:
                task.msg, task.firing_timers = msg, firing

    def flush(self) -> bool:
        """Write and forward every dirty entry (in LRU order); True if there was one."""
        if not self.dirty:
            return False
        for kb, e in list(self.entries.items()):
            if e[3]:
                e[3] = False
                self.dirty -= 1
                try:
                    self._write(kb, e)
                except (KafkaException, ProcessingError, AbortCheckpoint, FatalClientError):
                    raise
                except Exception as exc:
                    # The state write (a value too large for the changelog) or downstream of the
                    # aggregation failed on the flushed value: the entry leaves the cache (reads go
                    # to the store again) and the error policy decides, as for a failing timer call.
                    if self.entries.pop(kb, None) is not None:
                        self.size -= e[4]
                    self.on_error(kb, e[2], exc)
        if self.size > self.limit:
            self.evict()  # clean entries only now; also shrinks a cache whose share shrank
        return True

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0
        self.dirty = 0

    # --- the task's checkpoint participant -------------------------------------------------------

    def prepare_commit(self) -> None:
        pass  # flushed by the task's flushers, before every participant

    def committed(self) -> None:
        pass

    def aborted(self) -> None:
        self.clear()

    def recover(self) -> None:
        pass

    def close(self) -> None:
        self.clear()
        if self._shared:
            self._shared = False
            _budget.caches.discard(id(self))


__all__ = ["RecordCache", "ENTRY_OVERHEAD"]

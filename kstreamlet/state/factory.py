"""Where a task's stores come from: backend choice (RocksDB or memory), the state directory
of this worker, the changelog topic (created on first use), and the retry while the
previous owner in this pod still holds a RocksDB directory's lock.

The runtime creates one :class:`StoreFactory` per member; each task asks it for its stores
by name (``Task.store``). The changelog of store ``name`` is ``<application_id>-<name>-changelog``
with as many partitions as the task's inputs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kstreamlet.config import WORKER_INDEX_ENV
from kstreamlet.state.backend import Backend, MemoryBackend
from kstreamlet.state.store import ChangelogSend, Store

if TYPE_CHECKING:
    from kstreamlet.config import Settings

def worker_subdir() -> str:
    idx = os.environ.get(WORKER_INDEX_ENV)
    return f"w{idx}" if idx else "."


def changelog_topic(application_id: str, store: str) -> str:
    return f"{application_id}-{store}-changelog"


class StoreFactory:
    """Makes the stores of the member's tasks.

    ``ensure_changelog(topic, partitions)`` creates/checks the changelog (runtime/topics.py);
    ``send`` is how changelog records are produced (the current record collector's);
    ``end_offset`` (at-least-once only) tells a store its changelog's end offset;
    ``record_budget(topic)`` is the largest key + value the changelog accepts."""

    def __init__(self, settings: "Settings", ensure_changelog: Callable[[str, int], None],
                 send: ChangelogSend, end_offset: Callable[[str, int], int | None] | None,
                 record_budget: Callable[[str], int | None]) -> None:
        self.settings = settings
        self._ensure_changelog = ensure_changelog
        self._send = send
        self._end_offset = end_offset
        self._budget = record_budget

    def make(self, name: str, partition: int, input_partitions: int) -> Store:
        s = self.settings
        topic = changelog_topic(s.application_id, name)
        self._ensure_changelog(topic, input_partitions)
        path = Path(s.state_dir) / s.application_id / worker_subdir() / name / str(partition)

        def backend() -> Backend:
            if s.state_backend == "memory":
                return MemoryBackend()
            return open_rocksdb(path, s.rocksdb_block_cache_mb)

        store = Store(name, partition, backend(), topic, self._send, end_offset=self._end_offset,
                      backend_factory=backend)
        store.max_record_bytes = self._budget(topic)  # a larger state write fails its record
        return store


def open_rocksdb(path: Path, block_cache_mb: int, lock_wait: float = 30.0) -> Backend:
    """A RocksDB backend at ``path``, waiting up to ``lock_wait`` s while the previous owner in
    this pod (a task just revoked) still holds the directory's lock."""
    from kstreamlet.state.rocksdb import RocksDBBackend  # rocksdict loads only when RocksDB is used

    deadline = time.monotonic() + lock_wait
    while True:
        try:
            return RocksDBBackend(path, block_cache_mb=block_cache_mb)
        except Exception as e:
            if "lock" not in str(e).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.1)

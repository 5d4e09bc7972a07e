"""Where a task's stores come from: backend choice (RocksDB or memory), the state directory
of this worker, the changelog topic (created on first use), and the retry while the
previous owner in this pod still holds a RocksDB directory's lock.

The runtime creates one :class:`StoreFactory` per member; each task asks it for its stores
by name (``Task.store``). The changelog of store ``name`` is ``<application_id>-<name>-changelog``
with as many partitions as the task's inputs.

Layout: ``<state_dir>/<application_id>/<store>/<partition>``, one directory per store partition,
shared by the ``--workers`` of a pod (as Kafka Streams' stream threads share one state
directory): a partition moving between workers, or going from 1 to N workers, keeps its local
state; RocksDB's lock keeps two workers from opening one directory at once (the new owner waits
for the old one to close it). A directory of the earlier per-worker layout (``w<index>/<store>/
<partition>``) is moved into place the first time its store partition is opened.

Clean-up (:meth:`StoreFactory.cleanup`, Kafka Streams' ``state.cleanup.delay.ms``): a store
partition directory that no open store of this process uses, whose RocksDB lock no other process
(worker) holds, and that nothing wrote to for ``state_cleanup_delay`` seconds is removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import structlog

from kstreamlet.config import WORKER_INDEX_ENV
from kstreamlet.state.backend import Backend, MemoryBackend
from kstreamlet.state.store import ChangelogSend, Store

if TYPE_CHECKING:
    from kstreamlet.config import Settings

log = structlog.get_logger("kstreamlet.state")

#: How often (seconds, at most) the member looks for state directories to clean up.
CLEANUP_EVERY = 30.0


def worker_subdir() -> str:
    """The per-worker directory of the earlier layout (``w<index>``), migrated from on open."""
    idx = os.environ.get(WORKER_INDEX_ENV)
    return f"w{idx}" if idx else "."


def app_state_dir(settings: "Settings") -> Path:
    return Path(settings.state_dir) / settings.application_id


def store_dir(settings: "Settings", store: str, partition: int) -> Path:
    """Where store ``store``'s partition ``partition`` lives locally (every worker of a pod alike)."""
    return app_state_dir(settings) / store / str(partition)


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
        #: Stores this process made, by directory: a directory of an open one is never cleaned up.
        self._made: dict[Path, Store] = {}
        self._next_cleanup = time.monotonic() + CLEANUP_EVERY

    def make(self, name: str, partition: int, input_partitions: int) -> Store:
        s = self.settings
        topic = changelog_topic(s.application_id, name)
        self._ensure_changelog(topic, input_partitions)
        path = store_dir(s, name, partition)
        if s.state_backend == "rocksdb":
            _adopt_legacy(app_state_dir(s) / worker_subdir() / name / str(partition), path)

        def backend() -> Backend:
            if s.state_backend == "memory":
                return MemoryBackend()
            return open_rocksdb(path, s.rocksdb_block_cache_mb)

        store = Store(name, partition, backend(), topic, self._send, end_offset=self._end_offset,
                      backend_factory=backend)
        store.max_record_bytes = self._budget(topic)  # a larger state write fails its record
        self._made[path] = store
        return store

    def in_use(self) -> set[Path]:
        """Directories of this process's stores that are open (not closed since they were made)."""
        open_ = set()
        for path, store in list(self._made.items()):
            if getattr(store.backend, "closed", False):
                del self._made[path]
            else:
                open_.add(path)
        return open_

    def maybe_cleanup(self) -> list[Path]:
        """:meth:`cleanup` at most every :data:`CLEANUP_EVERY` seconds (called from the member's loop)."""
        now = time.monotonic()
        if now < self._next_cleanup:
            return []
        self._next_cleanup = now + CLEANUP_EVERY
        try:
            return self.cleanup()
        except OSError as e:  # never in the way of processing
            log.warning("state directory clean-up failed", error=str(e))
            return []

    def cleanup(self, now: float | None = None) -> list[Path]:
        """Remove the store partition directories this member no longer uses: not open in this
        process, not locked by another process (a worker of the same pod), and not modified for
        ``state_cleanup_delay`` seconds. Returns the directories removed."""
        s = self.settings
        if s.state_backend != "rocksdb":
            return []
        root = app_state_dir(s)
        if not root.is_dir():
            return []
        now = time.time() if now is None else now
        busy = self.in_use()
        removed = []
        for store in sorted(root.iterdir()):
            if not store.is_dir() or _is_worker_dir(store.name):
                continue
            for part in sorted(store.iterdir()):
                if not part.is_dir() or not part.name.isdigit() or part in busy:
                    continue
                idle = now - _last_modified(part)
                if idle < s.state_cleanup_delay:
                    continue
                if _remove_unless_locked(part):
                    removed.append(part)
                    log.info("removed the state directory of a partition this member no longer owns",
                             store=store.name, partition=int(part.name), idle_seconds=round(idle),
                             state_cleanup_delay=s.state_cleanup_delay)
            try:
                store.rmdir()  # only when empty
            except OSError:
                pass
        return removed


def _is_worker_dir(name: str) -> bool:
    return name.startswith("w") and name[1:].isdigit()


def _last_modified(path: Path) -> float:
    """The latest mtime of ``path`` and the files in it (RocksDB writes new files as it flushes)."""
    latest = path.stat().st_mtime
    for f in path.iterdir():
        try:
            latest = max(latest, f.stat().st_mtime)
        except FileNotFoundError:
            pass
    return latest


def _remove_unless_locked(path: Path) -> bool:
    """Remove the RocksDB directory ``path`` while holding its LOCK file's lock, so that no other
    process opens it meanwhile; False (kept) when another process holds the lock. Only ever called
    for directories no store of this process has open: a POSIX lock taken and released here would
    drop this process's own RocksDB lock on it."""
    lock = path / "LOCK"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        # Move it aside first, so that no directory is ever seen half-deleted at its own path.
        doomed = path.with_name(f".{path.name}.removing-{os.getpid()}")
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _adopt_legacy(old: Path, new: Path) -> None:
    """Move a store partition directory of the per-worker layout to the shared one (once)."""
    if old == new or not old.is_dir() or new.exists():
        return
    new.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(old, new)
        log.info("moved a state directory to the shared layout", source=str(old), target=str(new))
    except OSError as e:  # another worker moved it first, or it is in use: restore as usual
        log.warning("could not move a state directory to the shared layout", source=str(old), error=str(e))


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

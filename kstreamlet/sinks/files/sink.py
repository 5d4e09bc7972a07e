"""File sink with Flink ``FileSink`` / ``StreamingFileSink`` semantics, on fsspec filesystems.

Layout: ``<base_path>/<bucket id>/<prefix>-<partition>-<counter><suffix>``. A *bucket* is
a sub-directory chosen per record by a bucket assigner (:class:`DateTimeBucketAssigner`,
hourly ``yyyy-MM-dd--HH`` by default; :class:`BasePathBucketAssigner`; or any callable
``(value, BucketContext) -> str``). Each task (one input partition) has at most one
*in-progress* part file per bucket; the counter is per task, grows across buckets and
survives restarts, so names are never reused.

Lifecycle (file names of ``part-0-3`` with the default prefix and suffix)::

    .part-0-3.inprogress   being written (hidden: readers skip dot files)
    .part-0-3.pending      rolled: complete, waiting for the checkpoint to commit
    part-0-3               finished: renamed after the Kafka transaction of the checkpoint
                           that contains it committed; never modified again

Rolling (in-progress → pending) follows the rolling policy: :class:`DefaultRollingPolicy`
(size reached, open longer than the rollover interval, or no writes for the inactivity
interval — checked after each write, at each checkpoint, and by a processing-time timer
every ``bucket_check_interval``, all on the task clock) or :class:`OnCheckpointRollingPolicy`.
Bulk formats (:class:`ParquetFormat`) always roll at every checkpoint, as in Flink: a
Parquet file is only readable once its footer is written.

Exactly-once, and why in-progress row files may stay open across checkpoints
-----------------------------------------------------------------------------
Like Flink's recoverable writers, a row-format in-progress file on a local filesystem is
*not* rolled at every checkpoint (with a 100 ms commit interval that would make ten files
per second). Instead the checkpoint flushes (and by default fsyncs) it and records its
length in the committable, which commits atomically with the Kafka offsets. Bytes after
that length belong to records the next checkpoint will cover; if the process dies, or the
checkpoint aborts, recovery truncates the file back to the recorded length and the
records are replayed into it. So every byte of a finished file was committed exactly once.
Filesystems that cannot append and truncate (object stores via fsspec) roll every part at
every checkpoint instead; bulk formats are discarded on recovery and replayed.

Recovery (:meth:`FileSink.recover`, also used for aborts): pending files of the committed
checkpoint are finished; in-progress files it recorded are truncated to their recorded
length (a file rolled after that checkpoint is un-rolled); every other hidden file of this
partition is a leftover of an uncommitted checkpoint and is deleted.

Ownership: one base path + prefix per app (recovery deletes unreferenced hidden files of
its partition numbers). Use different prefixes for two sinks writing the same directory.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping

import structlog

from kstreamlet.runtime.faults import maybe_crash
from kstreamlet.sinks.files.buckets import (
    BasePathBucketAssigner,
    BucketAssigner,
    BucketContext,
    DateTimeBucketAssigner,
)
from kstreamlet.sinks.files.formats import (
    BulkFormat,
    BulkWriter,
    CallableEncoder,
    OutputFileConfig,
    RowEncoder,
    TextEncoder,
)
from kstreamlet.sinks.files.rolling import DefaultRollingPolicy, OnCheckpointRollingPolicy, RollingPolicy
from kstreamlet.sinks.files.storage import Storage
from kstreamlet.sinks.twophase.protocol import SinkContext, SinkUnavailableError, TwoPhaseCommitSink

log = structlog.get_logger("kstreamlet.sinks.files")


class _Part:
    """An in-progress part file of one bucket."""

    __slots__ = ("bucket", "counter", "size", "synced", "created_ms", "updated_ms", "handle", "writer")

    def __init__(self, bucket: str, counter: int, size: int, created: int, updated: int) -> None:
        self.bucket = bucket
        self.counter = counter
        self.size = size
        #: Bytes known to be flushed (and fsynced): checkpoints skip files with nothing new.
        self.synced = size
        self.created_ms = created
        self.updated_ms = updated
        self.handle: Any = None
        self.writer: BulkWriter | None = None


class FileTxn:
    """A checkpoint's transaction; the file sink keeps its state per task, so this is a marker."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq


def _empty_state() -> dict[str, Any]:
    return {"v": 1, "counter": 0, "in_progress": [], "pending": []}


class FileSink(TwoPhaseCommitSink[FileTxn]):
    """Writes records into bucketed part files, exactly once (see the module docs)."""

    def __init__(
        self,
        base_path: str,
        format: RowEncoder | BulkFormat | Callable[[Any], bytes | str] | None = None,
        *,
        bucket_assigner: BucketAssigner | Callable[[Any, BucketContext], str] | None = None,
        rolling_policy: RollingPolicy | None = None,
        output_file_config: OutputFileConfig | None = None,
        filesystem: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        fsync: bool = True,
        bucket_check_interval: float | None = None,
    ) -> None:
        """
        Args:
            base_path: directory or fsspec URL (``file:///data/out``, ``memory://x``, ``s3://b/p``).
            format: a :class:`RowEncoder` (default :class:`TextEncoder`), a callable
                ``value -> bytes | str`` (a complete line, newline included), or a
                :class:`BulkFormat` such as :class:`ParquetFormat`.
            bucket_assigner: default ``DateTimeBucketAssigner()`` (hourly, local time zone).
            rolling_policy: default :class:`DefaultRollingPolicy` for rows,
                :class:`OnCheckpointRollingPolicy` for bulk formats.
            output_file_config: prefix and suffix of part file names.
            filesystem: an fsspec filesystem instance (else derived from ``base_path``).
            storage_options: passed to fsspec when deriving the filesystem.
            fsync: fsync part files at checkpoints and before they become pending (survives
                a machine crash, not just a process crash).
            bucket_check_interval: seconds between processing-time rolling checks; default
                from the policy (its smallest interval, at most 60 s).
        """
        if format is None:
            format = TextEncoder()
        elif not isinstance(format, (RowEncoder, BulkFormat)):
            if not callable(format):
                raise TypeError("format must be a RowEncoder, a BulkFormat or a callable value -> bytes")
            format = CallableEncoder(format)
        self.format = format
        self.bulk = isinstance(format, BulkFormat)
        if bucket_assigner is None:
            bucket_assigner = DateTimeBucketAssigner()
        self.bucket_assigner = bucket_assigner
        self._assign: Callable[[Any, BucketContext], str] = (
            bucket_assigner.bucket_id if isinstance(bucket_assigner, BucketAssigner) else bucket_assigner)
        self.rolling_policy = rolling_policy or (OnCheckpointRollingPolicy() if self.bulk else DefaultRollingPolicy())
        self.output = output_file_config or OutputFileConfig()
        self.base_path = base_path
        self.fsync = fsync
        self._filesystem = filesystem
        self._storage_options = dict(storage_options or {})
        self.bucket_check_interval = bucket_check_interval
        Storage(base_path, filesystem, storage_options)  # fail fast on a bad URL / missing fsspec backend

    @classmethod
    def for_row_format(cls, base_path: str, encoder: RowEncoder | Callable[[Any], bytes | str], **kw: Any) -> "FileSink":
        """Flink's ``FileSink.forRowFormat(path, encoder)``."""
        return cls(base_path, encoder, **kw)

    @classmethod
    def for_bulk_format(cls, base_path: str, bulk_format: BulkFormat, **kw: Any) -> "FileSink":
        """Flink's ``FileSink.forBulkFormat(path, factory)``."""
        return cls(base_path, bulk_format, **kw)

    def processing_time_interval(self) -> float | None:
        if self.bucket_check_interval is not None:
            return self.bucket_check_interval
        return self.rolling_policy.check_interval()

    # --- per task ------------------------------------------------------------------------------

    def open(self, ctx: SinkContext) -> None:
        super().open(ctx)
        self.storage = Storage(self.base_path, self._filesystem, self._storage_options)
        #: Row files on a local filesystem are resumable: kept open across checkpoints and
        #: truncated on recovery. Everything else rolls at every checkpoint.
        self.resumable = self.storage.local and not self.bulk
        p, s = re.escape(self.output.prefix), re.escape(self.output.suffix)
        self._hidden_re = re.compile(rf"^\.{p}-{ctx.partition}-(\d+){s}\.(inprogress|pending)$")
        self._final_re = re.compile(rf"^{p}-{ctx.partition}-(\d+){s}$")
        self._counter = 0
        self._parts: dict[str, _Part] = {}
        self._rolled: list[tuple[str, int]] = []
        self._committed: dict[str, Any] = _empty_state()
        self._touched: set[str] = set()
        self._dirs: set[str] = set()
        self._buckets_ok: dict[str, str] = {}
        self._dirty = False
        self._last_check = 0
        interval = self.processing_time_interval()
        self._check_ms = int(interval * 1000) if interval else None
        # Per-record shortcuts, decided once per task.
        self._clock = ctx.clock
        assigner = self.bucket_assigner
        self._fixed_bucket: str | None = "" if type(assigner) is BasePathBucketAssigner else None
        self._date_buckets = assigner if type(assigner) is DateTimeBucketAssigner else None
        if self._date_buckets is not None:
            self._date_event_time = self._date_buckets.use_event_time
            self._date_unit = self._date_buckets._cache_unit
        self._date_last: tuple[int, str] = (-1, "")
        if not self.bulk:
            self._encode: Callable[[Any], bytes] = self.format.encode  # type: ignore[union-attr]
        policy = self.rolling_policy
        # OnCheckpointRollingPolicy never rolls on an event: skip the call per record.
        self._roll_on_event = (None if type(policy).should_roll_on_event is OnCheckpointRollingPolicy.should_roll_on_event
                               else policy.should_roll_on_event)
        # Bulk, one bucket, OnCheckpointRollingPolicy: nothing per record depends on time (the part's
        # updated_ms only feeds time-based rolling, and bulk parts never stay in progress).
        bulk_plain = (self.bulk and self._fixed_bucket is not None and self._check_ms is None
                      and type(policy) is OnCheckpointRollingPolicy)
        self.write = (self._write_bulk_plain if bulk_plain  # type: ignore[method-assign]
                      else self._write_bulk if self.bulk else self._write_rows)
        self._log = log.bind(sink=ctx.sink_name, partition=ctx.partition)
        self.stats = {"rolled": 0, "finished": 0, "truncated": 0, "deleted": 0, "unrolled": 0}

    def _name(self, counter: int) -> str:
        return f"{self.output.prefix}-{self.ctx.partition}-{counter}{self.output.suffix}"

    def path(self, bucket: str, counter: int, state: str = "finished") -> str:
        """Path of a part file in ``state`` (``finished``, ``inprogress`` or ``pending``)."""
        name = self._name(counter)
        if state != "finished":
            name = f".{name}.{state}"
        return self.storage.join(*bucket.split("/"), name) if bucket else self.storage.join(name)

    def _bucket_ok(self, raw: Any) -> str:
        """Check and normalise a bucket id not seen before (then cached)."""
        norm = "/".join(p for p in str(raw).replace("\\", "/").split("/") if p and p != ".")
        if str(raw).startswith("/") or any(p == ".." for p in norm.split("/")):
            raise ValueError(f"bucket id {raw!r} must be a relative path without '..'")
        if len(self._buckets_ok) > 10_000:
            self._buckets_ok.clear()
        self._buckets_ok[raw] = norm
        return norm

    # --- the protocol ----------------------------------------------------------------------------

    def begin_transaction(self) -> FileTxn:
        return FileTxn(self.ctx.checkpoint_id)

    # Per-record writing, chosen in open() by format (``self.write`` is one of the three
    # ``_write_*``): each does only what its case needs, with no per-record branch on the format.
    # After the write, rolling on the event and a due time check (the same few lines in the two
    # general writers, kept inline: a shared method costs a call per record).

    def write(self, txn: FileTxn, value: Any, key: Any, timestamp: int) -> None:
        # Before open() (which binds the writer for the task's format) there is nothing to write to.
        raise RuntimeError("FileSink.write before open()")

    def _write_bulk_plain(self, txn: FileTxn, value: Any, key: Any, timestamp: int) -> None:
        """Bulk format, one bucket, rolled only at checkpoints: nothing per record needs the clock
        or a rolling decision; a dict record goes straight to the writer's row buffer."""
        part = self._parts.get("")
        if part is None:
            part = self._open_part("", self._clock())
        w = part.writer
        buf = w.buffer  # type: ignore[union-attr]
        if buf is not None and type(value) is dict:
            buf.append(value)
            if len(buf) >= w.limit:  # type: ignore[union-attr]
                w.flush()  # type: ignore[union-attr]
                part.size = part.handle.tell()
        elif w.add(value) is not False:  # type: ignore[union-attr]
            part.size = part.handle.tell()
        self._dirty = True

    def _write_bulk(self, txn: FileTxn, value: Any, key: Any, timestamp: int) -> None:
        now = self._clock()
        bucket = self._fixed_bucket
        if bucket is None:
            if self._date_buckets is not None:  # the default assigner: its name changes rarely
                ms = timestamp if self._date_event_time else now
                last = self._date_last
                bucket = last[1] if ms // self._date_unit == last[0] else self._date_bucket(ms)
            else:
                bucket = self._assigned_bucket(value, key, timestamp, now)
        part = self._parts.get(bucket)
        if part is None:
            part = self._open_part(bucket, now)
        w = part.writer
        buf = w.buffer  # type: ignore[union-attr]
        if buf is not None and type(value) is dict:
            buf.append(value)
            if len(buf) >= w.limit:  # type: ignore[union-attr]
                w.flush()  # type: ignore[union-attr]
                part.size = part.handle.tell()
        elif w.add(value) is not False:  # type: ignore[union-attr]
            part.size = part.handle.tell()
        part.updated_ms = now
        self._dirty = True
        if self._roll_on_event is not None and self._roll_on_event(part):
            self._roll(part)
        if self._check_ms is not None and now - self._last_check >= self._check_ms:
            self._check_time(now)

    def _write_rows(self, txn: FileTxn, value: Any, key: Any, timestamp: int) -> None:
        now = self._clock()
        bucket = self._fixed_bucket
        if bucket is None:
            if self._date_buckets is not None:  # the default assigner: its name changes rarely
                ms = timestamp if self._date_event_time else now
                last = self._date_last
                bucket = last[1] if ms // self._date_unit == last[0] else self._date_bucket(ms)
            else:
                bucket = self._assigned_bucket(value, key, timestamp, now)
        data = self._encode(value)
        part = self._parts.get(bucket)
        if part is None:
            part = self._open_part(bucket, now)
        elif part.handle is None:
            part.handle = self._guard(self.storage.open_append, self.path(bucket, part.counter, "inprogress"))
        part.handle.write(data)
        part.size += len(data)
        part.updated_ms = now
        self._dirty = True
        if self._roll_on_event is not None and self._roll_on_event(part):
            self._roll(part)
        if self._check_ms is not None and now - self._last_check >= self._check_ms:
            self._check_time(now)

    def _date_bucket(self, ms: int) -> str:
        """The default assigner's bucket at ``ms`` once its name may have changed (once per second,
        or ms, at most): the writers use the last ``(unit, checked name)`` until then, without
        a BucketContext per record."""
        raw = self._date_buckets.name_at(ms)  # type: ignore[union-attr]
        ok = self._buckets_ok.get(raw)
        bucket = ok if ok is not None else self._bucket_ok(raw)
        self._date_last = (ms // self._date_unit, bucket)
        return bucket

    def _assigned_bucket(self, value: Any, key: Any, timestamp: int, now: int) -> str:
        raw = self._assign(value, BucketContext(now, timestamp, key))
        ok = self._buckets_ok.get(raw)
        return ok if ok is not None else self._bucket_ok(raw)

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a filesystem operation; I/O errors abort the checkpoint (retried after a backoff)."""
        try:
            return fn(*args)
        except OSError as e:
            raise SinkUnavailableError(f"file sink I/O error: {e!r}") from e

    def _open_part(self, bucket: str, now: int) -> _Part:
        d = self.storage.join(*bucket.split("/")) if bucket else self.storage.base
        if d not in self._dirs:
            self._guard(self.storage.makedirs, d)
            self._dirs.add(d)
        while True:
            counter = self._counter
            self._counter += 1
            if self.storage.exists(self.path(bucket, counter)) or self.storage.exists(self.path(bucket, counter, "pending")):
                continue  # a name from before the counter was known (lost state): never overwrite
            try:
                handle = self._guard(self.storage.open_new, self.path(bucket, counter, "inprogress"))
            except SinkUnavailableError as e:
                if isinstance(e.__cause__, FileExistsError):
                    continue
                raise
            break
        part = _Part(bucket, counter, 0, now, now)
        part.synced = -1
        part.handle = handle
        if self.bulk:
            part.writer = self.format.create_writer(handle)  # type: ignore[union-attr]
        else:
            head = self.format.header()  # type: ignore[union-attr]
            if head:
                handle.write(head)
                part.size = len(head)
        self._parts[bucket] = part
        self._touched.add(bucket)
        return part

    def _sync(self, handle: Any) -> None:
        handle.flush()
        if self.fsync and self.storage.local:
            os.fsync(handle.fileno())

    def _roll(self, part: _Part) -> None:
        """In-progress → pending: complete the file and rename it; it finishes at the next commit."""
        def close() -> None:
            if part.handle is None:  # restored, untouched since: the file is complete on disk
                return
            if part.writer is not None:
                part.writer.finish()
            self._sync(part.handle)
            part.handle.close()

        self._guard(close)
        part.handle = None
        self._guard(self.storage.rename, self.path(part.bucket, part.counter, "inprogress"),
                    self.path(part.bucket, part.counter, "pending"))
        del self._parts[part.bucket]
        self._rolled.append((part.bucket, part.counter))
        self._touched.add(part.bucket)
        self._dirty = True
        self.stats["rolled"] += 1

    def _check_time(self, now: int) -> None:
        self._last_check = now
        for part in list(self._parts.values()):
            if self.rolling_policy.should_roll_on_processing_time(part, now):
                self._roll(part)

    def on_processing_time(self, txn: FileTxn, now_ms: int) -> bool:
        self._check_time(now_ms)
        return bool(self._parts)

    def pre_commit(self, txn: FileTxn) -> Any:
        now = self.ctx.clock()
        policy = self.rolling_policy
        for part in list(self._parts.values()):
            if (not self.resumable or policy.should_roll_on_checkpoint(part)
                    or policy.should_roll_on_processing_time(part, now)):
                self._roll(part)
            elif part.handle is not None and part.synced != part.size:
                # Stays in progress: make its bytes durable; the committable records the length.
                self._guard(self._sync, part.handle)
                part.synced = part.size
        if not self._dirty:
            return None
        state = {
            "v": 1,
            "counter": self._counter,
            "in_progress": [[p.bucket, p.counter, p.size, p.created_ms, p.updated_ms] for p in self._parts.values()],
            "pending": [[b, c] for b, c in self._rolled],
        }
        self._rolled = []
        self._dirty = False
        return state

    def commit(self, committable: Any) -> None:
        pending = committable.get("pending", [])
        for bucket, counter in pending:
            src, dst = self.path(bucket, counter, "pending"), self.path(bucket, counter)
            if self.storage.exists(src):
                self._guard(self.storage.rename, src, dst)
                self.stats["finished"] += 1
                if len(pending) > 1:
                    maybe_crash("during_rename")
            elif not self.storage.exists(dst):
                self._log.error("pending part file missing at commit; its records are lost", path=src)
        self._committed = committable
        self._touched = {p.bucket for p in self._parts.values()}

    def abort(self, txn: FileTxn) -> None:
        for part in self._parts.values():
            if part.handle is not None:
                try:
                    part.handle.close()
                except Exception:
                    pass
        buckets = self._touched | {b for b, *_ in self._committed.get("in_progress", [])}
        self._restore(self._committed, buckets)

    def recover(self, committable: Any | None) -> None:
        self._committed = committable or _empty_state()
        self._restore(self._committed, None)

    def _restore(self, state: dict[str, Any], buckets: set[str] | None) -> None:
        """Make the files match ``state`` (see module docs); ``buckets`` None scans everything."""
        in_progress = {(b, c): (size, created, updated) for b, c, size, created, updated in state.get("in_progress", [])}
        pending = {(b, c) for b, c in state.get("pending", [])}
        restored: dict[str, _Part] = {}
        before = dict(self.stats)
        top = -1
        for bucket, name in list(self.storage.walk(buckets)):
            m = self._hidden_re.match(name)
            if m is None:
                f = self._final_re.match(name)
                if f is not None:
                    top = max(top, int(f.group(1)))
                continue
            counter, kind = int(m.group(1)), m.group(2)
            top = max(top, counter)
            key = (bucket, counter)
            if kind == "pending" and key in pending:
                self._guard(self.storage.rename, self.path(bucket, counter, "pending"), self.path(bucket, counter))
                self.stats["finished"] += 1
            elif key in in_progress and self.resumable:
                size, created, updated = in_progress[key]
                ip = self.path(bucket, counter, "inprogress")
                if kind == "pending":
                    # Rolled after the committed checkpoint: back to in progress, like the records in it.
                    self._guard(self.storage.rename, self.path(bucket, counter, "pending"), ip)
                    self.stats["unrolled"] += 1
                actual = self.storage.size(ip)
                if actual > size:
                    self._guard(self.storage.truncate, ip, size)
                    self.stats["truncated"] += 1
                elif actual < size:
                    # Only possible if bytes were lost after an fsync-less checkpoint and a machine crash.
                    self._log.error("in-progress part file is shorter than committed; records are lost",
                                    path=ip, committed=size, actual=actual)
                    size = actual
                restored[bucket] = _Part(bucket, counter, size, created, updated)
            else:
                # Written after the committed checkpoint: its records will be replayed.
                self._guard(self.storage.delete, self.path(bucket, counter, kind))
                self.stats["deleted"] += 1
        for (bucket, counter), _ in in_progress.items():
            if bucket not in restored and self.resumable:
                self._log.error("in-progress part file of the committed checkpoint is missing; its records are lost",
                                path=self.path(bucket, counter, "inprogress"))
        changed = {k: self.stats[k] - before[k] for k in before if self.stats[k] != before[k]}
        if changed:
            self._log.info("file sink restored part files to the committed checkpoint", **changed,
                           in_progress=len(restored))
        self._parts = restored
        self._rolled = []
        self._counter = max(int(state.get("counter", 0)), top + 1)
        self._touched = set(restored)
        self._dirty = False

    def close(self) -> None:
        # In-progress files stay as they are: the next owner truncates them to the committed
        # length and continues (row formats) or discards them (bulk).
        for part in getattr(self, "_parts", {}).values():
            if part.handle is not None:
                try:
                    part.handle.close()
                except Exception:
                    pass
                part.handle = None

    # --- inspection ----------------------------------------------------------------------------------

    def finished_files(self) -> list[str]:
        """Paths of this partition's finished part files (sorted), for tests and tools."""
        out = []
        for bucket, name in self.storage.walk(None):
            if self._final_re.match(name):
                out.append(self.storage.join(*bucket.split("/"), name) if bucket else self.storage.join(name))
        return sorted(out)


__all__ = ["FileSink", "FileTxn"]

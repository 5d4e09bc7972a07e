"""Async operators: ``Stream.map_async`` and keyed ``process`` with an ``async def process_element``.

Flink's ``AsyncWaitOperator`` is the model: each operator instance (one per task) holds a bounded
queue of at most ``concurrency`` records — calls running, or done and waiting to be released —
and releases results downstream

- ``ordered=True``: in input order (a completed record waits for the ones before it);
- ``ordered=False``: in completion order; with ``key_ordered=True`` a record still waits for the
  earlier records of its key.

The async ``process_element`` of a :class:`~kstreamlet.api.functions.KeyedProcessFunction` runs
one call per key at a time (the next record of a key starts when the previous one finished), so
its keyed state is read and written consistently; every step of its coroutine runs with its own
key in scope, its ``ctx.emit`` outputs are held until the record is released, and a failed
attempt's state writes are undone before a retry or the error policy.

Calls run on the task owner's event loop (runtime/async_io.py), stepped on the member's thread.
A call that raises or passes ``timeout`` is retried ``retries`` times with exponential backoff
(``retry_backoff`` s, doubling); then the record goes to ``error_policy`` (dead-letter record
with the error, skip, or fail).

Checkpoints (Flink's AsyncWaitOperator snapshots its queue the same way): a ``map_async`` queue is
*not* drained. Its held records — calls running, or done and waiting for their turn — are written
to the operator's store ``<name>-async`` (changelog ``<app>-<name>-async-changelog``) inside the
checkpoint's transaction, with their record context, and the input offsets commit past them; the
results released so far commit with them. After a crash, an abort or a rebalance the next owner
re-issues the held records' calls, in their order, before any newer input: every output exactly
once, a call at least once. A queue whose records its serdes cannot encode (the stream's serdes, or
``checkpoint_key_serde`` / ``checkpoint_value_serde``) is drained instead for that checkpoint (with a
warning), and so is an async ``process_element`` queue always: a running coroutine may have written
keyed state that must not commit half-done.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator

import structlog
from confluent_kafka import KafkaException

from kstreamlet.api.task import Record
from kstreamlet.errors import ProcessingError, TopologyError
from kstreamlet.runtime.async_io import AsyncRuntime
from kstreamlet.runtime.checkpoint import AbortCheckpoint, FatalClientError
from kstreamlet.serdes import Serde
from kstreamlet.topology.nodes import KeyedProcessNode, Node, Push, fan_out

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices as Task
    from kstreamlet.state.store import Store

log = structlog.get_logger("kstreamlet.async")

#: ``asyncio.timeout`` (Python 3.11+); on 3.10 calls are bounded by ``asyncio.wait_for``.
_timeout: Any = getattr(asyncio, "timeout", None)

#: Layout version of a held record in an async operator's store (first byte of the value).
HELD_VERSION = 1
_SEQ = struct.Struct(">Q")
_LEN = struct.Struct(">i")
_HEAD = struct.Struct(">Bqiqqi")  # version, ts, partition, offset, record timestamp, header count


def _put_bytes(out: list[bytes], b: bytes | None) -> None:
    if b is None:
        out.append(_LEN.pack(-1))
    else:
        out.append(_LEN.pack(len(b)))
        out.append(b)


def _get_bytes(raw: bytes, pos: int) -> tuple[bytes | None, int]:
    (n,) = _LEN.unpack_from(raw, pos)
    pos += 4
    if n < 0:
        return None, pos
    return raw[pos:pos + n], pos + n


def encode_held(key: bytes | None, value: bytes | None, ts: int, msg: Any) -> bytes:
    """A held record as stored: its (encoded) key and value, timestamp and input record context."""
    if msg is None:
        topic, part, off, rts, headers, rk, rv = "", -1, -1, ts, None, None, None
    else:
        topic, part, off = msg.topic() or "", msg.partition(), msg.offset()
        rts, headers, rk, rv = msg.timestamp()[1], msg.headers(), msg.key(), msg.value()
    hs = list(headers or ())
    out = [_HEAD.pack(HELD_VERSION, ts, part, off, rts, len(hs) if headers is not None else -1)]
    _put_bytes(out, topic.encode())
    for hk, hv in hs:
        _put_bytes(out, hk.encode())
        _put_bytes(out, hv if hv is None or isinstance(hv, bytes) else str(hv).encode())
    _put_bytes(out, rk)
    _put_bytes(out, rv)
    _put_bytes(out, key)
    _put_bytes(out, value)
    return b"".join(out)


def decode_held(raw: bytes) -> tuple[bytes | None, bytes | None, int, Record | None]:
    """``(key, value, ts, input record or None)`` of a stored held record."""
    version, ts, part, off, rts, nh = _HEAD.unpack_from(raw, 0)
    if version > HELD_VERSION:
        raise RuntimeError(f"an async operator's held record has layout version {version}, newer than this "
                           f"kstreamlet reads ({HELD_VERSION}); run a kstreamlet at least as new as the one that wrote it")
    pos = _HEAD.size
    tb, pos = _get_bytes(raw, pos)
    headers: list[tuple[str, bytes]] | None = [] if nh >= 0 else None
    for _ in range(max(nh, 0)):
        hk, pos = _get_bytes(raw, pos)
        hv, pos = _get_bytes(raw, pos)
        headers.append(((hk or b"").decode(), hv))  # type: ignore[union-attr,arg-type]
    rk, pos = _get_bytes(raw, pos)
    rv, pos = _get_bytes(raw, pos)
    key, pos = _get_bytes(raw, pos)
    value, pos = _get_bytes(raw, pos)
    msg = Record((tb or b"").decode(), part, off, rk, rv, rts, headers) if part >= 0 else None
    return key, value, ts, msg


class _Entry:
    """One record in an operator's queue."""

    __slots__ = ("seq", "msg", "key", "value", "ts", "kb", "fut", "done", "result", "error", "outputs",
                 "undo", "coro", "held")

    def __init__(self, seq: int, msg: Any, key: Any, value: Any, ts: int, kb: Any) -> None:
        self.seq, self.msg, self.key, self.value, self.ts, self.kb = seq, msg, key, value, ts, kb
        self.fut: asyncio.Task[Any] | None = None
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        #: Async process: (tag or None, key, value, ts) emitted by the current attempt.
        self.outputs: list[tuple[str | None, Any, Any, int]] = []
        #: Async process: store writes of the current attempt (undone when it fails).
        self.undo: list[Any] = []
        #: Async process: the coroutine of the current attempt (closed when abandoned).
        self.coro: Any = None
        #: The entry as written to the operator's store (encoded at its first checkpoint).
        self.held: bytes | None = None


class _Stepped:
    """Awaits ``coro`` with ``enter()`` / ``leave()`` around each of its steps: a keyed coroutine
    resumed after an ``await`` sees its own key (and record) again, whatever ran in between."""

    __slots__ = ("coro", "enter", "leave")

    def __init__(self, coro: Any, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        self.coro, self.enter, self.leave = coro, enter, leave

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        send: Any = None
        exc: BaseException | None = None
        while True:
            self.enter()
            try:
                if exc is not None:
                    yielded = coro.throw(exc)
                else:
                    yielded = coro.send(send)
            except StopIteration as stop:
                return stop.value
            finally:
                self.leave()
            try:
                send, exc = (yield yielded), None
            except BaseException as e:  # cancellation (a timeout) goes into the user's coroutine
                send, exc = None, e


class AsyncQueue:
    """The bounded queue of one async operator in one task (registered with the runtime)."""

    def __init__(self, task: "Task", node: "AsyncNodeMixin", child: Push, sides: dict[str, Push],
                 attempt: Callable[[_Entry], Awaitable[Any]], keyed_calls: bool,
                 hold: "tuple[Store, Serde[Any], Serde[Any]] | None" = None) -> None:
        self.task = task
        self.name = node.name
        self.capacity = node.concurrency
        self.ordered = node.ordered
        self.key_ordered = node.key_ordered or keyed_calls
        #: One call per key at a time (async process: consistent keyed state).
        self.keyed_calls = keyed_calls
        self.timeout = node.timeout
        self.retries = node.retries
        self.backoff = node.retry_backoff
        self.child, self.sides = child, sides
        self._attempt = attempt
        st = getattr(task, "subtopology", None)
        self.inputs = [(t, task.partition) for t in (st.sources if st is not None else ())]
        self.runtime = AsyncRuntime.of(task.collector, task.settings)
        task.async_queues.append(self)  # the task manager parks records while one is full
        self.loop = self.runtime.loop
        self.entries: dict[int, _Entry] = {}
        self.by_key: dict[Any, deque[_Entry]] = {}
        self.completed: list[_Entry] = []
        self._seq = 0
        self._releasing = False
        #: Most records held at once (tests and the benchmark read it).
        self.max_in_flight = 0
        #: A record waited for a free slot since the runtime's last backpressure look.
        self.saturated = False
        #: Where held records go at a checkpoint, and their key / value serdes (None: drained instead).
        self.hold = hold
        #: seq -> stored record of what the last committed checkpoint held; the current checkpoint's.
        self.persisted: dict[int, bytes] = {}
        self._snapshot: dict[int, bytes] | None = None
        #: Between the checkpoint's first prepare and its end nothing is released (runtime/async_io.py).
        self.frozen = False
        #: Whether checkpoints hold this queue's records (False once a record could not be encoded).
        self.holding = hold is not None
        self._warned = False

    # --- what the runtime asks --------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self.entries)

    def full(self) -> bool:
        return len(self.entries) >= self.capacity

    def running(self) -> int:
        return sum(1 for e in self.entries.values() if e.fut is not None and not e.done)

    def push(self, k: Any, v: Any, ts: int, kb: Any = None) -> None:
        if len(self.entries) >= self.capacity and not self.frozen:  # frozen: a checkpoint's flush, admitted
            self.runtime.wait_for_room(self)
        self._seq += 1
        self._add(_Entry(self._seq, self.task.msg, k, v, ts, kb))

    def _add(self, e: _Entry) -> None:
        self.entries[e.seq] = e
        if len(self.entries) > self.max_in_flight:
            self.max_in_flight = len(self.entries)
        start = not e.done  # done already: a held record that could not be decoded (its error is released)
        if e.done and not self.ordered:
            self.completed.append(e)
        if self.key_ordered:
            q = self.by_key.get(e.kb)
            if q is None:
                q = self.by_key[e.kb] = deque()
            if self.keyed_calls and q:
                start = False  # the key's previous record is still running or waiting: it starts after
            q.append(e)
        if start:
            self._start(e)

    def _start(self, e: _Entry) -> None:
        if self.timeout is None and not self.retries and not self.keyed_calls:
            coro: Any = self._attempt(e)  # the call itself: no wrapper coroutine per record
        else:
            coro = self._run(e)
        fut = self.loop.create_task(coro)
        e.fut = fut
        fut.add_done_callback(functools.partial(self._finished, e))

    async def _run(self, e: _Entry) -> Any:
        attempt = 0
        while True:
            try:
                if self.timeout is not None:
                    if _timeout is None:  # Python 3.10
                        return await asyncio.wait_for(self._attempt(e), self.timeout)
                    async with _timeout(self.timeout):  # no extra task per call, as wait_for makes
                        return await self._attempt(e)
                return await self._attempt(e)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._undo(e)
                if attempt >= self.retries:
                    raise
                await asyncio.sleep(self.backoff * (2 ** attempt))
                attempt += 1

    @staticmethod
    def _undo(e: _Entry) -> None:
        if e.undo:
            from kstreamlet.state.store import Store

            Store.rollback_writes(e.undo)
            e.undo.clear()
        e.outputs.clear()

    def _finished(self, e: _Entry, fut: "asyncio.Task[Any]") -> None:
        if fut.cancelled() or self.entries.get(e.seq) is not e:
            return  # abandoned
        e.done = True
        e.coro = None
        exc = fut.exception()
        if exc is not None:
            e.error = exc
        else:
            e.result = fut.result()
            e.undo.clear()
        if not self.ordered:
            self.completed.append(e)
        if self.keyed_calls:
            for nxt in self.by_key[e.kb]:
                if nxt.fut is None:
                    self._start(nxt)
                    break
        self.runtime.notify()

    def emit_ready(self) -> int:
        if self._releasing or self.frozen or not self.entries:
            return 0
        self._releasing = True
        n = 0
        try:
            if self.ordered:
                entries = self.entries
                while entries:
                    head = entries[next(iter(entries))]
                    if not head.done:
                        break
                    self._release(head)
                    n += 1
            else:
                progress = True
                while progress and self.completed:
                    progress = False
                    keep = []
                    for e in self.completed:
                        if self.key_ordered and self.by_key[e.kb][0] is not e:
                            keep.append(e)  # an earlier record of its key is not released yet
                            continue
                        self._release(e)
                        n += 1
                        progress = True
                    self.completed = keep
        finally:
            self._releasing = False
        return n

    def _release(self, e: _Entry) -> None:
        del self.entries[e.seq]
        if self.key_ordered:
            q = self.by_key[e.kb]
            q.popleft()
            if not q:
                del self.by_key[e.kb]
        task = self.task
        prev = task.msg
        task.msg = e.msg
        try:
            if e.error is not None:
                self._failed(e, e.error)
            elif self.keyed_calls:
                for tag, k, v, ts in e.outputs:
                    if tag is None:
                        self.child(k, v, ts)
                    else:
                        out = self.sides.get(tag)
                        if out is not None:
                            out(k, v, ts)
            else:
                self.child(e.key, e.result, e.ts)
        except (KafkaException, ProcessingError, AbortCheckpoint, FatalClientError):
            raise
        except Exception as exc:  # downstream of the operator: the record's failure, as on the sync path
            self._failed(e, exc)
        finally:
            task.msg = prev

    def _failed(self, e: _Entry, exc: BaseException) -> None:
        handler = self.task.collector.errors
        if handler is None:
            raise exc
        if e.msg is None:  # pushed by a timer (no input record): described as the timer's failure
            kb = e.kb if isinstance(e.kb, bytes) else b""
            handler.handle_timer(self.name, self.task.id, kb, "async", e.ts, exc, now=self.task.clock())
            return
        handler.handle(e.msg, exc)

    def abandon(self) -> None:
        """Cancel every call; forget every record (their checkpoint is aborted: they are replayed)."""
        for e in self.entries.values():
            if e.coro is not None:
                try:
                    e.coro.close()  # no more steps of the user's coroutine (it would write state)
                except BaseException:
                    pass
                self._undo(e)
            if e.fut is not None and not e.fut.done():
                e.fut.cancel()
        self.entries.clear()
        self.by_key.clear()
        self.completed.clear()

    # --- checkpoints (runtime/async_io.py AsyncRuntime.checkpoint, then the task's participants) ----

    def can_hold(self) -> bool:
        """Whether this checkpoint may commit with the queue's records still held (written to its
        store); False: the runtime drains it first. Encodes the records not yet encoded."""
        if not self.holding:
            return False
        if not self.entries:
            return True
        try:
            for e in self.entries.values():
                if e.held is None:
                    e.held = self._encode(e)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                log.warning("async operator's held records cannot be encoded with its serdes: its checkpoints wait "
                            "for the calls in flight instead (pass checkpoint_key_serde / checkpoint_value_serde "
                            "to map_async)", operator=self.name, task=self.task.id, error=repr(exc))
            return False
        return True

    def _encode(self, e: _Entry) -> bytes:
        assert self.hold is not None
        _, ks, vs = self.hold
        kb = ks.serialize(e.key) if e.key is not None else None
        vb = vs.serialize(e.value) if e.value is not None else None
        if (kb is not None and not isinstance(kb, bytes)) or (vb is not None and not isinstance(vb, bytes)):
            raise TypeError(f"the serdes returned {type(kb).__name__} / {type(vb).__name__}, not bytes")
        return encode_held(kb, vb, e.ts, e.msg)

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False

    def min_held_ts(self) -> int | None:
        return min((e.ts for e in self.entries.values()), default=None)

    def prepare_commit(self) -> None:
        """Write the records held now (and delete those released since the last checkpoint) to the
        operator's store, so they commit with the offsets that pass them (a queue that does not
        hold records has been drained: it deletes what the last checkpoint held)."""
        if self.hold is None:
            return
        if self.entries and not self.can_hold():  # drain_unheld drains such a queue: not expected here
            self.holding = False  # from now on drained at checkpoints; this one is replayed that way
            raise AbortCheckpoint(f"async operator {self.name!r} holds records it cannot write (a drained queue, "
                                  "or records its serdes cannot encode); its checkpoints wait for the calls "
                                  "in flight from now on")
        snap = {seq: e.held for seq, e in self.entries.items() if e.held is not None}
        store = self.hold[0]
        persisted = self.persisted
        for seq in persisted.keys() - snap.keys():
            store.delete(_SEQ.pack(seq))
        for seq, raw in snap.items():
            if seq not in persisted:
                store.put(_SEQ.pack(seq), raw)
        self._snapshot = snap

    def committed(self) -> None:
        if self._snapshot is not None:
            self.persisted = self._snapshot
            self._snapshot = None
        self.frozen = False
        self.runtime.checkpoint_ended()

    def aborted(self) -> None:
        """The checkpoint aborted: calls abandoned, inputs rewound to the last commit; the records
        that commit held are issued again (they come before the replayed inputs)."""
        self._snapshot = None
        self.frozen = False
        self.runtime.checkpoint_ended()
        self.abandon()
        self._reissue()

    def recover(self) -> None:
        """The task's stores are restored: issue again the records the last checkpoint held."""
        if self.hold is None:
            return
        self.persisted = {_SEQ.unpack(k)[0]: v for k, v in self.hold[0].iter_range(b"", None)}
        self._reissue()

    def _reissue(self) -> None:
        if not self.persisted or self.hold is None:
            return
        _, ks, vs = self.hold
        task = self.task
        for seq in sorted(self.persisted):
            raw = self.persisted[seq]
            self._seq = max(self._seq, seq)
            try:
                kb, vb, ts, msg = decode_held(raw)
                k = ks.deserialize(kb) if kb is not None else None
                v = vs.deserialize(vb) if vb is not None else None
            except Exception as exc:  # released as that record's failure: the error policy (DLQ) takes it
                e = _Entry(seq, None, None, None, 0, None)
                e.done, e.error = True, exc
                try:
                    e.msg = decode_held(raw)[3]
                except Exception:
                    pass
            else:
                e = _Entry(seq, msg, k, v, ts, k if self.key_ordered else None)
            e.held = raw
            self._add(e)
        log.info("async records held by the last checkpoint issued again", operator=self.name, task=task.id,
                 records=len(self.persisted))

    def close(self) -> None:
        self.frozen = False
        self.abandon()
        self.runtime.unregister(self)
        self.runtime.checkpoint_ended()


class AsyncNodeMixin:
    """Settings shared by the async nodes."""

    name: str
    concurrency: int
    timeout: float | None
    ordered: bool
    key_ordered: bool
    retries: int
    retry_backoff: float

    def _configure(self, concurrency: int, timeout: float | None, ordered: bool, key_ordered: bool,
                   retries: int, retry_backoff: float) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds (or None), got {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if retry_backoff < 0:
            raise ValueError(f"retry_backoff must be >= 0 seconds, got {retry_backoff!r}")
        self.concurrency, self.timeout, self.ordered = concurrency, timeout, ordered
        self.key_ordered, self.retries, self.retry_backoff = key_ordered, retries, retry_backoff

    def _check_downstream(self, node: Node) -> None:
        """Event time downstream in the same task would let timers overtake held records."""
        seen: set[int] = set()
        todo = list(node.children) + [c for cs in getattr(node, "side_children", {}).values() for c in cs]
        while todo:
            n = todo.pop()
            if n.id in seen:
                continue
            seen.add(n.id)
            if n.uses_event_time:
                raise TopologyError(
                    f"{n.name!r} uses event time right after async operator {self.name!r} in the same "
                    "sub-topology: its timers could fire before held records arrive. Repartition between "
                    "them (key_by / repartition): watermarks are forwarded only after the async results")
            todo += n.children
            todo += [c for cs in getattr(n, "side_children", {}).values() for c in cs]
            todo += [c for cs in getattr(n, "branch_children", []) for c in cs]

    def _register(self, task: "Task", q: AsyncQueue) -> None:
        q.runtime.register(q)
        task.add_participant(q)
        try:  # the checkpoint drains before the task forwards its watermark (runtime/task.py)
            task.async_runtime = q.runtime  # type: ignore[attr-defined]
        except AttributeError:
            pass


class AsyncMapNode(AsyncNodeMixin, Node):
    """``Stream.map_async(fn)``: ``await fn(value)`` becomes the new value; key and timestamp kept."""

    kind = "map_async"

    def __init__(self, fn: Callable[[Any], Awaitable[Any]], concurrency: int = 64, timeout: float | None = None,
                 ordered: bool = True, key_ordered: bool = False, retries: int = 0, retry_backoff: float = 0.1,
                 name: str | None = None, key_serde: Serde[Any] | None = None,
                 value_serde: Serde[Any] | None = None) -> None:
        Node.__init__(self, name)
        if not callable(fn):
            raise TypeError(f"map_async needs an async function, got {fn!r}")
        self.fn = fn
        self._configure(concurrency, timeout, ordered, key_ordered, retries, retry_backoff)
        #: Serdes of the input records held across a checkpoint (None: the checkpoint drains instead).
        self.key_serde, self.value_serde = key_serde, value_serde

    @property
    def store_name(self) -> str:
        """The store of the records held across checkpoints (changelog ``<app>-<name>-async-changelog``)."""
        return f"{self.name}-async"

    def compile(self, task: "Task") -> Push:
        self._check_downstream(self)
        fn = self.fn

        def attempt(e: _Entry) -> Awaitable[Any]:
            return fn(e.value)  # type: ignore[no-any-return]

        hold = None
        if self.key_serde is not None and self.value_serde is not None:
            try:
                store = task.store(self.store_name)
            except RuntimeError:  # a task without a state backend: checkpoints drain
                store = None
            if store is not None:
                hold = (store, self.key_serde, self.value_serde)
        q = AsyncQueue(task, self, self.compile_children(task), {}, attempt, keyed_calls=False, hold=hold)
        self._register(task, q)
        push = q.push
        if not self.key_ordered:
            return push

        def push_keyed(k: Any, v: Any, ts: int) -> None:
            push(k, v, ts, k)

        return push_keyed


class AsyncKeyedProcessNode(AsyncNodeMixin, KeyedProcessNode):
    """A :class:`~kstreamlet.api.functions.KeyedProcessFunction` whose ``process_element`` is a
    coroutine: one call per key at a time, state scoped to the call's key, outputs held until the
    record is released (in input order with ``ordered``, else as they complete — per key in order)."""

    kind = "keyed_process_async"

    def __init__(self, fn: Any, key_serde: Serde[Any], name: str | None = None, concurrency: int = 64,
                 timeout: float | None = None, ordered: bool = True, retries: int = 0,
                 retry_backoff: float = 0.1) -> None:
        from kstreamlet.api.functions import KeyedProcessFunction

        if type(fn).on_timer is not KeyedProcessFunction.on_timer:
            raise TypeError(f"{type(fn).__name__}: a KeyedProcessFunction with an async process_element cannot "
                            "have on_timer (timers would interleave with a key's running call); use a separate "
                            "synchronous KeyedProcessFunction for timers")
        KeyedProcessNode.__init__(self, fn, key_serde, name)
        self.uses_event_time = False
        self._configure(concurrency, timeout, ordered, True, retries, retry_backoff)

    def _has_timers(self) -> bool:
        return False

    def compile(self, task: "Task") -> Push:
        from kstreamlet.api.context import KeyedContext, RuntimeContext

        self._check_downstream(self)
        fn = copy.copy(self.fn)
        child = self.compile_children(task)
        sides = {tag: fan_out([task.compiled(c) for c in cs]) for tag, cs in self.side_children.items()}
        fn.open(RuntimeContext(task, self))
        task.on_close(fn.close)
        keyctx = task.keyctx
        kser = None if self.key_serde.identity else self.key_serde.serialize
        process_element = fn.process_element

        def attempt(e: _Entry) -> Awaitable[Any]:
            out = e.outputs

            def forward(k: Any, v: Any, ts: int) -> None:
                out.append((None, k, v, ts))

            side_fwd = {tag: (lambda k, v, ts, tag=tag: out.append((tag, k, v, ts))) for tag in sides}
            ctx = KeyedContext(task, forward, side_fwd, None)  # type: ignore[arg-type]
            ctx.key = e.key
            ctx.timestamp = e.ts
            all_stores = list(getattr(task, "stores", {}).values())

            def enter() -> None:
                keyctx.key_bytes = e.kb
                task.msg = e.msg
                for s in all_stores:
                    s.track_writes(e.undo)

            def leave() -> None:
                for s in all_stores:
                    s.untrack_writes()

            enter()
            try:
                coro = process_element(e.value, ctx)
            finally:
                leave()
            e.coro = coro
            return _Stepped(coro, enter, leave)  # type: ignore[return-value]

        async def run_attempt(e: _Entry) -> Any:
            return await attempt(e)

        q = AsyncQueue(task, self, child, sides, run_attempt, keyed_calls=True)
        self._register(task, q)
        push = q.push

        def push_keyed(k: Any, v: Any, ts: int) -> None:
            push(k, v, ts, (kser(k) if kser is not None else k) or b"")

        return push_keyed

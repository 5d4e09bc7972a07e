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
with the error, skip, or fail). Checkpoints drain the queue first (runtime/async_io.py).
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator

from confluent_kafka import KafkaException

from kstreamlet.errors import ProcessingError, TopologyError
from kstreamlet.runtime.async_io import AsyncRuntime
from kstreamlet.runtime.checkpoint import AbortCheckpoint, FatalClientError
from kstreamlet.serdes import Serde
from kstreamlet.topology.nodes import KeyedProcessNode, Node, Push, fan_out

if TYPE_CHECKING:
    from kstreamlet.api.task import TaskServices as Task


class _Entry:
    """One record in an operator's queue."""

    __slots__ = ("seq", "msg", "key", "value", "ts", "kb", "fut", "done", "result", "error", "outputs",
                 "undo", "coro")

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
                 attempt: Callable[[_Entry], Awaitable[Any]], keyed_calls: bool) -> None:
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
        self.loop = self.runtime.loop
        self.entries: dict[int, _Entry] = {}
        self.by_key: dict[Any, deque[_Entry]] = {}
        self.completed: list[_Entry] = []
        self._seq = 0
        self._releasing = False
        #: Most records held at once (tests and the benchmark read it).
        self.max_in_flight = 0

    # --- what the runtime asks --------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self.entries)

    def full(self) -> bool:
        return len(self.entries) >= self.capacity

    def push(self, k: Any, v: Any, ts: int, kb: Any = None) -> None:
        if len(self.entries) >= self.capacity:
            self.runtime.wait_for_room(self)
        self._seq += 1
        e = _Entry(self._seq, self.task.msg, k, v, ts, kb)
        self.entries[e.seq] = e
        if len(self.entries) > self.max_in_flight:
            self.max_in_flight = len(self.entries)
        start = True
        if self.key_ordered:
            q = self.by_key.get(kb)
            if q is None:
                q = self.by_key[kb] = deque()
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
                    return await asyncio.wait_for(self._attempt(e), self.timeout)
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
        if self._releasing or not self.entries:
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

    # --- checkpoint participant (runtime/task.py) -----------------------------------------------

    def prepare_commit(self) -> None:
        self.runtime.drain()  # normally done already, before the task's watermark records

    def committed(self) -> None:
        return None

    def aborted(self) -> None:
        self.abandon()

    def recover(self) -> None:
        return None

    def close(self) -> None:
        self.abandon()
        self.runtime.unregister(self)


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
                 name: str | None = None) -> None:
        Node.__init__(self, name)
        if not callable(fn):
            raise TypeError(f"map_async needs an async function, got {fn!r}")
        self.fn = fn
        self._configure(concurrency, timeout, ordered, key_ordered, retries, retry_backoff)

    def compile(self, task: "Task") -> Push:
        self._check_downstream(self)
        fn = self.fn

        def attempt(e: _Entry) -> Awaitable[Any]:
            return fn(e.value)  # type: ignore[no-any-return]

        q = AsyncQueue(task, self, self.compile_children(task), {}, attempt, keyed_calls=False)
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

"""The event loop of async operators (``map_async``, async ``process_element``), one per collector.

A member (and a TopologyTestDriver) owns one :class:`AsyncRuntime` per record collector: an
asyncio (or uvloop) event loop that is *stepped on the member's own thread* between records,
never run on a thread of its own. So user coroutines, keyed state access and every output run
on the thread that owns the tasks, the transaction and the consumer: no locks, and an output is
produced into the open transaction exactly when its record's result is released.

The loop runs only inside :meth:`AsyncRuntime.run` — a short step each iteration of the member
loop (``wait`` ms at most, returning as soon as some call completes), while an operator waits for
a free slot, and when a checkpoint drains. Operators (``operators/async_ops.py``) register here;
what the runtime needs of them is :class:`AsyncOperator`.

Checkpoints (:meth:`AsyncRuntime.checkpoint`, at the first task's ``prepare_commit``): the loop
is not run to completion. Completed results are released into the transaction; then every
operator is *frozen* (nothing more is released until the checkpoint ends) and each writes the
records it still holds to its store with its task's other state (Flink snapshots the queue of its
AsyncWaitOperator the same way). The offsets commit past them: a committed offset passes an
unfinished record only when that record is in the committed state, from where the next owner, or
this member after an abort, issues its call again before any newer input. An operator that
cannot hold its records across a checkpoint (an async ``process_element``, whose running
coroutine may have written keyed state; records its serdes cannot encode) is drained instead: the
loop runs until nothing of it is in flight, within ``async_checkpoint_timeout``; past it the
checkpoint aborts (:class:`~kstreamlet.runtime.checkpoint.AbortCheckpoint`), the calls are
abandoned and the inputs replayed from the last commit. A task forwards no watermark past the
timestamp of a record its operators hold. So an abort, a rebalance or a shutdown never leaves a
result to be emitted twice, nor one lost.

Backpressure: an operator holds at most ``concurrency`` records (in flight or waiting to be
released in order). A member's task manager does not route a record to a task whose operator is
full: it parks it, and every later record of its partition, on the task (runtime/tasks.py), so
the loop goes on committing, polling and serving other tasks; the parked records (bounded by
the marks below) are routed as slots free up, and the commit offset never passes them. A record
pushed into a full operator anyway (one input fanned out by a ``flat_map``; the test driver)
waits, running the loop, for a free slot — the queue is never unbounded. After each batch
:meth:`AsyncRuntime.backpressure` pauses the input partitions of every task with more than twice
the low mark parked (the low mark: the larger of the operator's capacity and the consume batch,
``poll_batch_size``), or whose operator had to wait for a slot since it last looked, so the
consumer stops fetching for it (a task parks at most three batches or so); it resumes them (only
those it paused) once at most the low mark is parked (or, with nothing parked, the operator holds
at most half its capacity). The marks are wide because a pause costs: librdkafka drops the
partition's prefetched records and fetches them again after the resume (tens of ms under load,
about a second without the seek of :func:`~kstreamlet.runtime.topics.resume_now`), and an
operator that runs dry meanwhile idles. Measured (bench/async_enrich.py, 1 s commits): pausing at
twice the capacity cut throughput from ~2,980 to ~1,840 records/s.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import weakref
from typing import Any, Callable, Iterable, Protocol

import structlog

from kstreamlet.errors import ConfigError

log = structlog.get_logger("kstreamlet.async")

TP = tuple[str, int]


class AsyncOperator(Protocol):
    """One async operator in one task, as the runtime sees it (operators/async_ops.py)."""

    #: The task's input partitions ``(topic, partition)``: paused while the operator is full.
    inputs: list[TP]

    def in_flight(self) -> int:
        """Records held (calls running, waiting for their key, or done but not yet released)."""
        ...

    def full(self) -> bool: ...

    #: Most records held at once (``concurrency``).
    capacity: int

    #: Set by the runtime when a record had to wait for a free slot; cleared by :meth:`AsyncRuntime.backpressure`.
    saturated: bool

    def running(self) -> int:
        """Calls not yet complete."""
        ...

    def emit_ready(self) -> int:
        """Release the results that may go downstream now (order mode permitting); their number."""
        ...

    def abandon(self) -> None:
        """Cancel every call and forget every held record (the checkpoint aborted, or closing)."""
        ...

    def can_hold(self) -> bool:
        """Whether the checkpoint may commit with this operator's records held (else it drains)."""
        ...

    def freeze(self) -> None:
        """Release nothing more until the checkpoint ends (committed / aborted)."""
        ...

    def thaw(self) -> None:
        """Release again (the checkpoint drains this operator after all)."""
        ...

    def min_held_ts(self) -> int | None:
        """The smallest timestamp of a held record (None: none held)."""
        ...

    task: Any


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        try:
            uvloop: Any = importlib.import_module("uvloop")
        except ImportError:
            raise ConfigError("async_event_loop='uvloop' (env KSTREAMLET_ASYNC_EVENT_LOOP) needs uvloop: "
                              "pip install 'kstreamlet[async]'") from None
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


class AsyncRuntime:
    """The async operators of one collector (a member's clients, or a test driver) and their loop."""

    _by_owner: "weakref.WeakKeyDictionary[Any, AsyncRuntime]" = weakref.WeakKeyDictionary()

    def __init__(self, kind: str = "asyncio", checkpoint_timeout: float = 5.0) -> None:
        self.kind = kind
        self.loop = new_event_loop(kind)
        self.checkpoint_timeout = checkpoint_timeout
        self.operators: list[AsyncOperator] = []
        #: Input partitions this runtime paused (it resumes only these).
        self.paused: set[TP] = set()
        self._wake: asyncio.Future[None] | None = None
        #: Completions :meth:`run` still waits for.
        self._left = 0
        #: Inside a checkpoint (between its first prepare and its end): operators are frozen.
        self.checkpointing = False
        #: The operators this checkpoint drained (not frozen).
        self._unheld: list[AsyncOperator] = []
        #: Seconds the next checkpoint first waits for the calls in flight (a handover: the member
        #: sets it before the commit on revocation and at shutdown, so fewer calls are made twice).
        self.settle_next = 0.0
        #: The member's consume batch (poll_batch_size): the unit of the parked records' marks.
        self.batch = 1000

    @classmethod
    def of(cls, owner: Any, settings: Any = None) -> "AsyncRuntime":
        """The runtime of ``owner`` (a record collector), created on first use."""
        rt = cls._by_owner.get(owner)
        if rt is None:
            kind = getattr(settings, "async_event_loop", "asyncio")
            timeout = getattr(settings, "effective_async_checkpoint_timeout", 5.0)
            rt = cls._by_owner[owner] = cls(kind, timeout)
            rt.batch = int(getattr(settings, "poll_batch_size", 1000) or 1000)
        return rt

    @classmethod
    def find(cls, owner: Any) -> "AsyncRuntime | None":
        """The runtime of ``owner`` if an async operator ever ran on it."""
        return cls._by_owner.get(owner) if owner is not None else None

    # --- operators -------------------------------------------------------------------------

    def register(self, op: AsyncOperator) -> None:
        self.operators.append(op)

    def unregister(self, op: AsyncOperator) -> None:
        if op in self.operators:
            self.operators.remove(op)

    def pending(self) -> bool:
        return any(op.in_flight() for op in self.operators)

    def notify(self) -> None:
        """A call completed (runs on the loop): :meth:`run` may return."""
        self._left -= 1
        w = self._wake
        if w is not None and self._left <= 0 and not w.done():
            w.set_result(None)

    def _expire(self) -> None:
        self._left = 0
        self.notify()

    # --- stepping the loop -----------------------------------------------------------------

    def run(self, timeout: float, completions: int = 1) -> None:
        """Run the loop until ``completions`` calls complete or ``timeout`` s pass (0: one pass over
        what is ready)."""
        loop = self.loop
        if loop.is_running():  # an operator's push from inside a coroutine step cannot nest the loop
            return
        if timeout <= 0:
            loop.call_soon(loop.stop)
            loop.run_forever()
            return
        self._left = completions
        self._wake = wake = loop.create_future()
        handle = loop.call_later(timeout, self._expire)
        try:
            loop.run_until_complete(wake)
        finally:
            handle.cancel()
            self._wake = None

    def step(self, wait: float = 0.0, completions: int = 1) -> int:
        """One iteration of the member loop: run the loop (up to ``wait`` s when something is in
        flight, or until ``completions`` calls complete), release ready results. Returns the
        number released."""
        if not self.operators:
            return 0
        if wait > 0 and self.pending() and not self._ready():
            self.run(wait, completions)
        else:
            self.run(0)
        return self.emit_ready()

    def _ready(self) -> int:
        return sum(op.emit_ready() for op in self.operators)

    def emit_ready(self) -> int:
        n = 0
        while True:  # releasing into a downstream async operator may make more ready
            k = self._ready()
            if not k:
                return n
            n += k

    def checkpoint(self) -> None:
        """At the first task's ``prepare_commit`` of a checkpoint (later calls in the same
        checkpoint do nothing): release what is complete, drain the operators that cannot hold
        their records across it, then freeze every operator until the checkpoint ends."""
        if self.checkpointing or not self.operators:
            return
        settle, self.settle_next = self.settle_next, 0.0
        if settle > 0:  # a handover (revocation, shutdown): let the calls finish if they do so soon
            deadline = time.monotonic() + settle
            while self.pending() and time.monotonic() < deadline:
                self.run(min(0.05, max(0.001, deadline - time.monotonic())))
                self.emit_ready()
        self.emit_ready()
        drain = [op for op in self.operators if not op.can_hold()]
        if drain:
            self.drain(ops=drain)
        self.checkpointing = True
        self._unheld = drain
        for op in self.operators:
            if op not in drain:
                op.freeze()

    def drain_unheld(self) -> bool:
        """During the checkpoint (after a record cache flushed into them): drain again the operators
        that do not hold records across it — and those that were to, but were pushed a record they
        cannot encode (thawed: they have not written their records yet). Whether any had something
        in flight."""
        if not self.checkpointing:
            return False
        for op in self.operators:
            if op not in self._unheld and not op.can_hold():
                op.thaw()
                self._unheld.append(op)
        ops = self._unheld
        if not any(op.in_flight() for op in ops):
            return False
        self.drain(ops=ops)
        return True

    def checkpoint_ended(self) -> None:
        self.checkpointing = False
        self._unheld = []

    def held_min_ts(self, task: Any) -> int | None:
        """The smallest timestamp of a record held by ``task``'s operators (its watermark stays below)."""
        return min((t for op in self.operators if op.task is task for t in (op.min_held_ts(),) if t is not None),
                   default=None)

    def drain(self, timeout: float | None = None, ops: "list[AsyncOperator] | None" = None) -> None:
        """Run until nothing of ``ops`` (default: every operator) is in flight, every result
        released, within ``timeout`` (default ``async_checkpoint_timeout``); past it raise
        ``AbortCheckpoint``."""
        from kstreamlet.runtime.checkpoint import AbortCheckpoint

        if not self.operators:
            return
        waited = self.operators if ops is None else ops
        bound = self.checkpoint_timeout if timeout is None else timeout
        deadline = time.monotonic() + bound
        self.emit_ready()
        while any(op.in_flight() for op in waited):
            left = deadline - time.monotonic()
            if left <= 0:
                held = sum(op.in_flight() for op in waited)
                raise AbortCheckpoint(f"{held} async call(s) still in flight after {bound:g}s "
                                      "(async_checkpoint_timeout, env KSTREAMLET_ASYNC_CHECKPOINT_TIMEOUT): "
                                      "aborting the checkpoint; its records are replayed")
            self.run(min(left, 0.05))
            self.emit_ready()

    def wait_for_room(self, op: AsyncOperator) -> None:
        """Block (running the loop) until ``op`` has a free slot; past ``async_checkpoint_timeout``
        raise ``AbortCheckpoint`` (calls that hang without a timeout must not stall the member)."""
        from kstreamlet.runtime.checkpoint import AbortCheckpoint

        deadline = time.monotonic() + self.checkpoint_timeout
        # Wait for a few completions at a time, not one: each entry into the loop costs more than
        # a call's own step, and a slot or two of ``concurrency`` idle for a moment costs little.
        batch = max(1, op.capacity // 16)
        op.saturated = True
        while op.full():
            if time.monotonic() > deadline:
                raise AbortCheckpoint(f"an async operator stayed full for {self.checkpoint_timeout:g}s "
                                      "(async_checkpoint_timeout, env KSTREAMLET_ASYNC_CHECKPOINT_TIMEOUT): "
                                      "aborting the checkpoint; its records are replayed")
            self.run(0.05, min(batch, max(1, op.running())))
            self.emit_ready()

    def abandon_all(self) -> None:
        for op in list(self.operators):
            op.abandon()
        self.run(0)  # let cancellations run

    # --- backpressure ----------------------------------------------------------------------

    def backpressure(self, pause: Callable[[list[Any]], None], resume: Callable[[list[Any]], None],
                     make_tp: Callable[[str, int], Any], keep_paused: Callable[[TP], bool] = lambda tp: False,
                     assigned: Iterable[TP] | None = None) -> None:
        """Pause the inputs of tasks with more than twice the low mark parked (the larger of
        the operator's capacity and the consume batch), or whose operator waited for a slot since
        the last call; resume those this runtime paused once at most the low mark is parked
        (nothing parked: the operator is down to half its capacity), not those ``keep_paused``
        (e.g. restoring). Forgets partitions no longer ``assigned`` (the member resumes a
        partition it gives up)."""
        if assigned is not None:
            self.paused &= set(assigned)
        full: set[TP] = set()
        busy: set[TP] = set()  # above the low mark: a paused input stays paused
        for op in self.operators:
            parked = getattr(op.task, "parked", None)
            waiting = sum(len(q) for q in parked.values()) if parked else 0
            low = max(op.capacity, self.batch)
            if op.saturated or waiting > 2 * low:
                full.update(op.inputs)
            elif (waiting > low) if waiting else (op.in_flight() > op.capacity // 2):
                busy.update(op.inputs)
            op.saturated = False
        to_pause = sorted(full - self.paused)
        to_resume = sorted(tp for tp in self.paused - full - busy if not keep_paused(tp))
        if to_pause:
            pause([make_tp(t, p) for t, p in to_pause])
            self.paused.update(to_pause)
            log.debug("async operator full; inputs paused", partitions=[f"{t}[{p}]" for t, p in to_pause])
        if to_resume:
            resume([make_tp(t, p) for t, p in to_resume])
            self.paused.difference_update(to_resume)

    def close(self) -> None:
        self.abandon_all()
        try:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        except Exception:
            pass
        self.loop.close()

"""The task manager: which tasks this member runs, and how records reach them.

It owns the tasks (one per sub-topology and partition number), the routes from an input
partition to its task, and the sets of tasks that need ticks or buffer several inputs. On an
assignment it creates tasks, resolves start offsets (committed offsets, stable under
KIP-447, else each source's start position), restores stream time from the committed
metadata and registers stores for restoration; it returns what the member must do with the
consumer (:class:`Assignment`) and never calls the member back. Kafka Streams splits the
same job between ``TaskManager`` and ``ActiveTaskCreator``.

The per-record path is :meth:`TaskManager.process`: one route lookup and one offset note
per run of records of the same partition, then the task's compiled node chain.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import structlog
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, Consumer, KafkaError, KafkaException, \
    TopicPartition

from kstreamlet.errors import ProcessingError
from kstreamlet.runtime.checkpoint import TP, AbortCheckpoint, FatalClientError
from kstreamlet.runtime.task import Message, Task
from kstreamlet.state.recovery import Restorer
from kstreamlet.topology.builder import SubTopology, Topology

log = structlog.get_logger("kstreamlet.tasks")

#: Makes the task of a sub-topology for one partition number (runtime/member.py binds the
#: collector, the store factory and the partition counts of the current clients).
TaskFactory = Callable[[SubTopology, int], Task]


@dataclass
class Assignment:
    """What :meth:`TaskManager.assign` decided: assign ``positioned`` (offsets resolved), pause
    ``paused`` (tasks being restored), and whether the member is ready (nothing restoring)."""

    positioned: list[TopicPartition] = field(default_factory=list)
    paused: list[TopicPartition] = field(default_factory=list)
    created: list[Task] = field(default_factory=list)
    restoring: list[Task] = field(default_factory=list)


class TaskManager:
    """The tasks of one member and their input routes."""

    def __init__(self, topology: Topology, new_task: TaskFactory, exactly_once: bool,
                 transaction_timeout: float) -> None:
        self.topology = topology
        self.new_task = new_task
        self.exactly_once = exactly_once
        self.transaction_timeout = transaction_timeout
        self.tasks: dict[tuple[int, int], Task] = {}
        #: Input partition -> the function a record of it goes to (its task's source, or its queue).
        self.routes: dict[TP, Callable[[Message], None]] = {}
        #: Input partition -> its task (offsets are noted on the task).
        self.owners: dict[TP, Task] = {}
        self.assigned: set[TP] = set()
        #: Tasks with records parked behind a full async operator (:meth:`process`).
        self.parking: set[Task] = set()
        self.multi_input: list[Task] = []
        #: Tasks with event time or timers: ticked every loop iteration.
        self.timed: list[Task] = []
        #: Committed offsets seen at assignment (event-time tasks): backlog before the first fetch.
        self.assigned_committed: dict[TP, int] = {}
        #: The broadcast elements read so far: a task created later replays them first.
        self.broadcast_history: list[tuple[str, bytes | None, bytes | None, int]] = []
        #: Metrics (kstreamlet/metrics.py), noted once per run of records of a partition: records
        #: per input topic of the last batch (watermark records excluded), the timestamp of the last
        #: record consumed per input partition (lag in seconds), and of the last record of the batch.
        self.batch_in: dict[str, int] = {}
        self.consumed_ts: dict[TP, int] = {}
        self.max_ts: dict[TP, int] = {}
        self.last_ts: int | None = None
        #: Interactive queries (kstreamlet/query): tasks whose stores hold committed, fully restored
        #: state, read from the HTTP threads under ``query_lock``; a task leaves before it is closed.
        self.queryable: dict[tuple[int, int], Task] = {}
        self.query_lock = threading.Lock()

    def __iter__(self) -> Any:
        return iter(self.tasks.values())

    def __len__(self) -> int:
        return len(self.tasks)

    def task_of(self, topic: str, partition: int) -> Task | None:
        return self.tasks.get((self.topology.subtopology_of(topic).id, partition))

    # --- assignment ---------------------------------------------------------------------------

    def assign(self, consumer: Consumer, restorer: Restorer, partitions: list[TopicPartition]) -> Assignment:
        """Create the tasks of newly assigned ``partitions``, resolve where each starts, restore
        stream time and register the stores for restoration."""
        out = Assignment()
        for tp in partitions:
            st = self.topology.subtopology_of(tp.topic)
            key = (st.id, tp.partition)
            task = self.tasks.get(key)
            if task is None:
                task = self.new_task(st, tp.partition)
                self.tasks[key] = task
                out.created.append(task)
                if task.multi_input:
                    self.multi_input.append(task)
                if task.needs_ticks:
                    self.timed.append(task)
                if task.broadcast_handlers:
                    for rec in self.broadcast_history:
                        task.on_broadcast(*rec)
            t = (tp.topic, tp.partition)
            self.routes[t] = task.enqueue if task.multi_input else task.on_message[tp.topic]
            self.owners[t] = task
            self.assigned.add(t)
        out.positioned = self.start_offsets(consumer, partitions)
        stateful = [t for t in out.created if t.participates or t.needs_watermarks]
        if stateful:
            # committed() waits for stable offsets (KIP-447): a previous owner's pending transaction is
            # resolved before we read changelog end offsets, so restoration sees all it committed.
            ask = [TopicPartition(tp.topic, tp.partition) for tp in partitions
                   if self.owners[(tp.topic, tp.partition)] in stateful]
            for c in self.committed_stable(consumer, ask):
                self.owners[(c.topic, c.partition)].restore_stream_time(c.topic, c.metadata)
                self.assigned_committed[(c.topic, c.partition)] = c.offset
        for task in stateful:
            task.snapshot_time()
            if task.stores and restorer.add((task.subtopology.id, task.partition), list(task.stores.values()),
                                            self.exactly_once):
                out.restoring.append(task)
            else:
                task.recover()
        with self.query_lock:
            for task in out.created:
                if task not in out.restoring:
                    self.queryable[(task.subtopology.id, task.partition)] = task
        out.paused = [tp for task in out.restoring for tp in self._inputs_of(task)]
        return out

    def _inputs_of(self, task: Task) -> list[TopicPartition]:
        return [TopicPartition(t, task.partition) for t in task.subtopology.sources
                if (t, task.partition) in self.assigned]

    def committed_stable(self, consumer: Consumer, tps: list[TopicPartition]) -> list[TopicPartition]:
        """Committed offsets (with metadata), waiting while a previous owner's transaction that
        holds offsets for them is still open (UNSTABLE_OFFSET_COMMIT, KIP-447). Treating such a
        partition as "no offset committed" would reprocess it from the start."""
        deadline = time.monotonic() + self.transaction_timeout + 60
        result: dict[TP, TopicPartition] = {}
        todo = list(tps)
        while todo:
            try:
                got = consumer.committed(todo, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
            except KafkaException as e:
                if time.monotonic() > deadline:
                    raise
                log.info("waiting for stable committed offsets", error=str(e))
                time.sleep(0.5)
                continue
            todo = []
            for c in got:
                if c.error is not None:
                    todo.append(TopicPartition(c.topic, c.partition))
                else:
                    result[(c.topic, c.partition)] = c
            if todo:
                if time.monotonic() > deadline:
                    raise KafkaException(got[0].error if got and got[0].error else KafkaError(KafkaError._TIMED_OUT))
                log.info("waiting for stable committed offsets", partitions=[f"{t.topic}[{t.partition}]" for t in todo])
                time.sleep(0.5)
        return [result[(tp.topic, tp.partition)] for tp in tps]

    def start_offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Committed offsets win; otherwise (or when overriding) each source's start position."""
        def start_of(topic: str) -> Any:
            return self.topology.subtopology_of(topic).sources[topic].start

        out = [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in partitions]
        explicit = [tp for tp in out if start_of(tp.topic).kind != "group"]
        if not explicit:
            return out
        ask = [TopicPartition(tp.topic, tp.partition) for tp in explicit if not start_of(tp.topic).override_committed]
        committed: dict[TP, int] = {}
        if ask:
            for got in self.committed_stable(consumer, ask):
                committed[(got.topic, got.partition)] = got.offset
        by_ts: list[TopicPartition] = []
        for tp in explicit:
            start = start_of(tp.topic)
            c = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
            if c >= 0:
                tp.offset = c
            elif start.kind == "earliest":
                tp.offset = OFFSET_BEGINNING
            elif start.kind == "latest":
                tp.offset = OFFSET_END
            elif start.kind == "offsets":
                tp.offset = start.offsets.get(tp.partition, OFFSET_INVALID)
            elif start.kind == "timestamp":
                by_ts.append(TopicPartition(tp.topic, tp.partition, start.timestamp_ms or 0))
        if by_ts:
            found = {(r.topic, r.partition): r.offset for r in consumer.offsets_for_times(by_ts, timeout=30)}
            for tp in out:
                if (tp.topic, tp.partition) in found:
                    off = found[(tp.topic, tp.partition)]
                    tp.offset = off if off >= 0 else OFFSET_END
        return out

    def revoke(self, partitions: Iterable[TopicPartition], restorer: Restorer | None) -> list[Task]:
        """Forget ``partitions``; close (and return) the tasks left without any input."""
        for tp in partitions:
            t = (tp.topic, tp.partition)
            self.routes.pop(t, None)
            owner = self.owners.pop(t, None)
            if owner is not None:
                owner.parked.pop(t, None)  # consumed, not processed: the next owner starts before them
            self.assigned.discard(t)
        closed = []
        for key, task in list(self.tasks.items()):
            if not any((t, task.partition) in self.assigned for t in task.subtopology.sources):
                with self.query_lock:  # waits for a query reading its stores
                    self.queryable.pop(key, None)
                del self.tasks[key]
                self.parking.discard(task)
                if task in self.multi_input:
                    self.multi_input.remove(task)
                if task in self.timed:
                    self.timed.remove(task)
                if restorer is not None:
                    restorer.remove_task(key)
                task.close()
                closed.append(task)
        return closed

    def close_all(self) -> None:
        with self.query_lock:
            self.queryable.clear()
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()
        self.routes.clear()
        self.owners.clear()
        self.assigned.clear()
        self.parking.clear()
        self.multi_input.clear()
        self.timed.clear()

    # --- restoration, time, broadcasts ---------------------------------------------------------

    def restore_step(self, restorer: Restorer) -> tuple[list[Task], list[TopicPartition]]:
        """Apply a batch of changelog records; the tasks now restored (recovered) and their inputs
        to resume."""
        done, resume = [], []
        for key in restorer.poll():
            task = self.tasks.get(key)
            if task is None:
                continue
            task.recover()
            with self.query_lock:
                self.queryable[key] = task
            done.append(task)
            resume += self._inputs_of(task)
        return done, resume

    def due(self, now: int, restorer: Restorer | None) -> list[Task]:
        """Timed tasks (not restoring) whose tick would fire timers or forward a watermark."""
        return [t for t in self.timed
                if not (restorer is not None and restorer.is_restoring((t.subtopology.id, t.partition)))
                and t.time_due(now)]

    def on_broadcast(self, records: list[tuple[str, bytes | None, bytes | None, int]]) -> None:
        self.broadcast_history += records
        for rec in records:
            for task in self.tasks.values():
                if task.broadcast_handlers:
                    task.on_broadcast(*rec)

    def has_backlog(self, consumer: Consumer | None, topic: str, partition: int) -> bool:
        """Records are waiting in ``topic[partition]`` (from the last fetch; no broker round trip)."""
        if consumer is None or (topic, partition) not in self.assigned:
            return False
        owner = self.owners.get((topic, partition))
        if owner is not None and owner.parked.get((topic, partition)):
            return True  # consumed but parked (async backpressure): not idle
        try:
            tp = TopicPartition(topic, partition)
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            pos = consumer.position([tp])[0].offset
        except KafkaException:
            return True  # unknown: do not declare it idle
        if pos < 0:
            # Nothing consumed since assignment: compare with where consumption starts. Calling a
            # partition idle here would let its watermark jump to max-1 (no disorder bound) and
            # make the records it is about to replay late downstream.
            start = self.assigned_committed.get((topic, partition), -1)
            return high > max(start, 0)
        return high > pos

    # --- the record path ------------------------------------------------------------------------

    def process(self, msgs: list[Any], handle: Callable[[Any, Exception], None],
                consumer_error: Callable[[Any], None], resumed: bool = False) -> int:
        """Route a batch to the tasks; returns the number of records processed. Each task notes
        the next offset to commit and the first offset of the checkpoint (where an abort
        rewinds) of its inputs. A failing record goes to ``handle`` (the error policy);
        Kafka, checkpoint and ``error_policy=fail`` errors propagate.

        A record of a task whose async operator is full is *parked* on the task, not routed
        (with every later record of its partition): the loop goes on (commits, polls, other
        tasks) instead of waiting inside the batch, the partition is paused (async backpressure)
        and :meth:`take_parked` hands the records back once there is room. The commit offset
        never passes a parked record. ``resumed``: ``msgs`` came from :meth:`take_parked` (the
        heads of their partitions' parked records: those parked again go back in front)."""
        routes = self.routes
        owners = self.owners
        n = 0
        gate: Callable[[], bool] | None = None  # the run's task has async operators: is one full?
        held: dict[TP, list[Message]] = {}  # parked in this batch
        task: Task | None = None
        # Messages of one partition come in runs: look the route up, note the rewind offset and
        # the commit offset once per run, not per record.
        cur_t: str | None = None
        cur_p = -1
        tp: TP = ("", -1)
        route: Callable[[Message], None] | None = None
        offsets: dict[TP, int] = {}
        counts = self.batch_in
        counts.clear()
        run_n = 0
        last_m: Any = None
        try:
            for m in msgs:
                err = m.error()
                if err is not None:
                    consumer_error(err)
                    continue
                p = m.partition()
                t = m.topic()
                if p != cur_p or t != cur_t:
                    if route is not None and n > run_n:
                        offsets[tp] = last_m.offset() + 1
                        self._note_run(tp, n - run_n, last_m)
                    run_n = n
                    cur_p, cur_t = p, t
                    tp = (t, p)
                    route = routes.get(tp)
                    if route is not None:
                        task = owners[tp]
                        offsets = task.offsets
                        task.first.setdefault(tp, m.offset())
                        gate = task.async_full if task.async_queues else None
                if route is None:
                    continue  # revoked while in flight
                if gate is not None:
                    h = held.get(tp)
                    if h is not None or gate() or (not resumed and tp in task.parked):  # type: ignore[union-attr]
                        if h is None:
                            h = held[tp] = []
                        h.append(m)
                        continue
                try:
                    route(m)
                except (KafkaException, ProcessingError, FatalClientError, AbortCheckpoint):
                    raise
                except Exception as e:
                    handle(m, e)
                last_m = m  # the run's commit offset is read from its last record at the run's end
                n += 1
            if route is not None and n > run_n:
                offsets[tp] = last_m.offset() + 1
                self._note_run(tp, n - run_n, last_m)
        except BaseException:
            # The consumer's position is past the whole batch: when processing stops early (an
            # abort), every partition of the batch must rewind, not only those already reached.
            for m in msgs:
                if m.error() is None:
                    owner = owners.get((m.topic(), m.partition()))
                    if owner is not None:
                        owner.first.setdefault((m.topic(), m.partition()), m.offset())
            raise
        for (t, p), h in held.items():
            owner = owners[(t, p)]
            q = owner.parked.get((t, p))
            if q is None:
                owner.parked[(t, p)] = deque(h)
            elif resumed:
                q.extendleft(reversed(h))
            else:
                q.extend(h)
            self.parking.add(owner)
        for task in self.multi_input:
            task.drain(functools.partial(self._process_buffered, task, handle=handle))
        for task in self.timed:
            if task.watermarks_in:  # watermark records of forwarded inputs are not records in
                for t, k in task.watermarks_in.items():
                    if k:
                        counts[t] = counts.get(t, 0) - k
                        task.watermarks_in[t] = 0
        self.last_ts = last_m.timestamp()[1] if last_m is not None else None
        return n

    def take_parked(self) -> list[Message]:
        """Records parked by :meth:`process` of tasks with free async slots again: per partition
        the oldest first, per task at most as many as its fullest operator has free slots (those
        that still find it full, e.g. behind a ``flat_map``, are parked again in front)."""
        out: list[Message] = []
        for task in list(self.parking):
            room = task.async_room()
            for tp in list(task.parked):
                q = task.parked[tp]
                while q and room > 0:
                    out.append(q.popleft())
                    room -= 1
                if not q:
                    del task.parked[tp]
            if not task.parked:
                self.parking.discard(task)
        return out

    def parked_batch(self) -> int:
        """Completions worth waiting for before routing parked records again: 1/16 of the smallest
        capacity of a parking task (1 when nothing is parked)."""
        if not self.parking:
            return 1
        return max(1, min((q.capacity for task in self.parking for q in task.async_queues), default=16) // 16)

    def _note_run(self, tp: TP, records: int, last: Any) -> None:
        """Metrics of a run of ``records`` records of input partition ``tp`` ending with ``last``."""
        if records <= 0:
            return
        counts = self.batch_in
        counts[tp[0]] = counts.get(tp[0], 0) + records
        ts = last.timestamp()[1]
        self.consumed_ts[tp] = ts
        if ts > self.max_ts.get(tp, -1):
            self.max_ts[tp] = ts

    @staticmethod
    def _process_buffered(task: Task, m: Message, handle: Callable[[Any, Exception], None]) -> None:
        """A record a multi-input task buffered, processed in timestamp order."""
        try:
            task.on_message[m.topic()](m)
        except (KafkaException, ProcessingError, FatalClientError, AbortCheckpoint):
            raise
        except Exception as e:
            handle(m, e)

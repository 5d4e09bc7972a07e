"""One consumer-group member: consumer, producer, tasks, the poll/process/commit loop.

Flow of a record: ``consumer.consume()`` returns a batch → each message is routed by
(topic, partition) to its task's ``on_message`` → the task's compiled node chain runs →
sinks call :meth:`Member._send` (``producer.produce``) → every ``commit_interval`` the
:class:`~kstreamlet.runtime.checkpoint.Checkpointer` commits (one transaction under
exactly-once).

Rebalances: on assignment, tasks are created and start offsets resolved; on revocation,
the current checkpoint is committed first (so the next owner starts exactly after it),
then the tasks are closed; on loss, the checkpoint is aborted and the rest rewound.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from kstreamlet import metrics
from kstreamlet.config import Settings
from kstreamlet.dev.topics import create_topics, partition_count
from kstreamlet.errors import ConfigError, ProcessingError, RecordProductionError, TopologyError
from kstreamlet.logging import librdkafka_logger
from kstreamlet.observability import Heartbeat, start_http_server, worker_http_port
from kstreamlet.runtime.checkpoint import TP, AbortCheckpoint, Checkpointer, FatalClientError, classify
from kstreamlet.runtime.deadline import CallTimedOut, call_with_deadline
from kstreamlet.runtime.dlq import ErrorHandler
from kstreamlet.runtime.production import OutputLimits, per_record_error, record_size, rejected_output
from kstreamlet.runtime.task import Message, Task
from kstreamlet.sources.base import SourceRunner
from kstreamlet.state.backend import Backend, MemoryBackend
from kstreamlet.state.recovery import Restorer
from kstreamlet.state.store import Store
from kstreamlet.topology.builder import Topology, plan_internal_partitions
from kstreamlet.topology.nodes import SourceNode

if TYPE_CHECKING:
    from kstreamlet.app import App

log = structlog.get_logger("kstreamlet.member")


def client_config(settings: Settings, logger: Any = None) -> dict[str, Any]:
    """Settings every Kafka client of the app shares (bootstrap + security passthrough), and the
    ``logging.Logger`` librdkafka's own log lines go to (see kstreamlet.logging.librdkafka_logger)."""
    extra = {} if logger is None else {"logger": logger}
    return {"bootstrap.servers": settings.bootstrap_servers, **settings.kafka_config, **extra}


def prepare_topics(app: "App", topology: Topology, admin: AdminClient) -> dict[str, int]:
    """Check user topics, create internal ones, check co-partitioning. Returns partition counts."""
    s = app.settings
    counts: dict[str, int] = {}

    def count(topic: str) -> int | None:
        if topic not in counts:
            n = partition_count(admin, topic)
            if n is not None:
                counts[topic] = n
        return counts.get(topic)

    missing = [t for st in topology.subtopologies for t, src in st.sources.items()
               if not src.internal and count(t) is None]
    missing += [sink.topic for st in topology.subtopologies for sink in st.sinks
                if not sink.internal and count(sink.topic) is None]
    if missing:
        raise TopologyError(
            f"topics {sorted(set(missing))} do not exist; create them first (kstreamlet never auto-creates user topics)"
        )
    # Internal topics: declared, else as wide as the inputs of their writers; joins' inputs equal.
    desired = plan_internal_partitions(topology, count)
    for name, n in desired.items():
        if count(name) is None:
            create_topics(admin, {name: n}, config=topology.internal_topics[name].config, exist_ok=True)
            counts[name] = partition_count(admin, name) or n
    missing_b = [t for t in app._broadcasts if count(t) is None]
    if missing_b:
        raise TopologyError(f"broadcast topics {sorted(missing_b)} do not exist; create them first")
    if s.error_policy == "dlq" and count(s.effective_dlq_topic) is None:
        create_topics(admin, {s.effective_dlq_topic: 1}, exist_ok=True)
        counts[s.effective_dlq_topic] = 1
    for st in topology.subtopologies:
        ns = {t: counts[t] for t in st.sources}
        if len(set(ns.values())) > 1:
            raise TopologyError(
                f"inputs of sub-topology {st.id} are not co-partitioned: partition counts {ns}. "
                "Give them the same partition count, or key_by() one side to repartition it."
            )
    return counts


class Member:
    """A consumer-group member running the app's topology until stopped."""

    def __init__(self, app: "App", instance_id: str, install_signal_handlers: bool = True) -> None:
        self.app = app
        self.settings = app.settings
        self.instance_id = instance_id
        self.topology = app.topology()
        self.eos = self.settings.processing_guarantee == "exactly_once"
        self.log = log.bind(app=self.settings.application_id, instance=instance_id)
        self._stop = threading.Event()
        self._install_signals = install_signal_handlers
        self.tasks: dict[tuple[int, int], Task] = {}
        self.routes: dict[TP, Callable[[Message], None]] = {}
        self.assigned: set[TP] = set()
        self.multi_input_tasks: list[Task] = []
        self.partition_counts: dict[str, int] = {}
        self.sources: list[SourceRunner] = []
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.ckpt: Checkpointer | None = None
        self.records_processed = 0
        self.started_at = time.monotonic()
        self.first_record_at: float | None = None
        self.ready = threading.Event()
        self.restorer: Restorer | None = None
        #: Tasks with event time or timers: ticked every loop iteration.
        self.timed_tasks: list[Task] = []
        self._state_topics_checked: set[str] = set()
        #: Committed offsets seen at assignment (event-time tasks): backlog before the first fetch.
        self._assigned_committed: dict[TP, int] = {}
        #: librdkafka's log lines (every client of this member) become structlog events with app/instance.
        self.rdkafka_logger = librdkafka_logger(app=self.settings.application_id, instance=instance_id)
        #: What the broker accepts per written topic (sizes, timestamps): runtime/production.py.
        self.limits = OutputLimits(self.settings.kafka_config)
        #: The consumer whose group membership is established (see is_ready); a rebuilt consumer rejoins.
        self._joined_for: Consumer | None = None
        self._join_probe_lock = threading.Lock()
        self._join_probe_at = 0.0
        self._admin_client: AdminClient | None = None
        #: True while the member cannot make progress (its clients are being rebuilt after a
        #: broker/coordinator outage or a fence): readiness drops, liveness stays healthy.
        self._degraded = False
        #: When librdkafka last said every broker is down (0: reachable); see _probe_reachable.
        self._unreachable_since = 0.0
        self._reach_probe_at = 0.0
        #: Bumped when clients are rebuilt: callbacks of abandoned clients become no-ops.
        self._generation = 0

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the current checkpoint, leave the group and return."""
        self._stop.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.log.info("signal received, shutting down", signal=signal.Signals(signum).name)
        self.stop()
        # Bound the shutdown: whatever hangs, the process leaves within shutdown_timeout.
        t = threading.Timer(self.settings.shutdown_timeout, self._shutdown_timeout)
        t.daemon = True
        t.start()

    def _shutdown_timeout(self) -> None:
        self.log.error("shutdown did not finish in time; exiting", timeout=self.settings.shutdown_timeout)
        os._exit(3)

    def run(self) -> None:
        if self._install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        # Liveness = the loop turns (beaten per iteration; the bound exceeds its longest blocking call,
        # committed() in on_assign). Readiness = is_ready(): joined, nothing restoring, not degraded.
        self.heartbeat = Heartbeat(max_silence=max(60.0, 3 * self.settings.transaction_timeout + 60))
        self.http_server = self._start_http()
        try:
            admin = self._admin()
            self._check_bootstrap(admin)
            self.partition_counts = prepare_topics(self.app, self.topology, admin)
            self.limits.refresh(admin, self._written_topics(), self.partition_counts)
        except BaseException:
            if self.http_server is not None:
                self.http_server.shutdown()
            raise
        self._start_sources()
        self._create_clients()
        self._start_broadcasts()
        self.log.info("member started", topics=self.topology.source_topics,
                      guarantee=self.settings.processing_guarantee, group_protocol=self.settings.group_protocol)
        try:
            self._loop()
        finally:
            self._shutdown()
            if self.http_server is not None:
                self.http_server.shutdown()

    def _start_http(self) -> Any:
        if self.settings.http_port is None:
            return None
        port = worker_http_port(self.settings.http_port)
        try:
            return start_http_server(port, health=self.heartbeat, ready=self.is_ready)
        except OSError as e:
            raise ConfigError(f"cannot serve /healthz /readyz /metrics on port {port} (setting http_port, "
                              f"env KSTREAMLET_HTTP_PORT): {e.strerror or e}") from None

    def _check_bootstrap(self, admin: AdminClient, timeout: float = 8.0) -> None:
        """Fail at start, in one line, when no broker answers at the bootstrap address."""
        try:
            admin.list_topics(timeout=timeout)
        except KafkaException as e:
            err = e.args[0] if e.args else e
            detail = err.str() if isinstance(err, KafkaError) else str(err)
            raise ConfigError(
                f"cannot reach Kafka at {self.settings.bootstrap_servers} within {timeout:g}s (setting "
                f"bootstrap_servers, env KSTREAMLET_BOOTSTRAP_SERVERS; SASL/SSL via kafka_config): {detail}") from None

    # --- readiness ---------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Readiness (``/readyz``): the member has joined the group, no task is restoring, and it
        is not degraded (``_degraded``: its clients are being rebuilt). A member without partitions
        (more members than partitions) is ready once the group lists it: KIP-848 never calls
        on_assign for an empty assignment, so the probe asks the group coordinator then."""
        if self._degraded or self._stop.is_set():
            return False
        if self._unreachable_since and not self._probe_reachable():
            return False
        consumer, restorer = self.consumer, self.restorer
        if consumer is None or restorer is None or restorer.active:
            return False
        return self._joined_for is consumer or self._probe_joined(consumer)

    def _probe_reachable(self) -> bool:
        """Called from probe threads while librdkafka reported every broker down: answer False
        until a metadata request succeeds again (at most one per second, 1 s each), so a member
        that has nothing in flight (and so no transactional call to time out) is not ready either
        while the cluster is gone."""
        since = self._unreachable_since
        if not self._join_probe_lock.acquire(timeout=0.5):
            return False
        try:
            now = time.monotonic()
            if now < self._reach_probe_at:
                return False
            self._reach_probe_at = now + 1.0
            self._admin().list_topics(timeout=1)
            if self._unreachable_since == since:
                self._unreachable_since = 0.0
            return True
        except Exception:
            return False
        finally:
            self._join_probe_lock.release()

    def _probe_joined(self, consumer: Consumer) -> bool:
        """Called from probe threads: does the group coordinator list this member (by client.id:
        instance ids are unique in a group), with no partitions, in a stable group? At most one
        DescribeConsumerGroups per second, none once joined. It never calls the consumer: its
        methods block while the loop thread is inside consume()."""
        if not self._join_probe_lock.acquire(timeout=0.5):
            return False
        try:
            now = time.monotonic()
            if self._joined_for is consumer or now < self._join_probe_at:
                return self._joined_for is consumer
            self._join_probe_at = now + 1.0
            admin = self._admin()
            gid, client_id = self.settings.application_id, f"{self.settings.application_id}-{self.instance_id}"
            desc = admin.describe_consumer_groups([gid], request_timeout=2)[gid].result(timeout=2)
            admin.poll(0)  # serve its log lines
            mine = [m for m in desc.members if m.client_id == client_id]
            stable = getattr(desc.state, "name", str(desc.state)) == "STABLE"
            if not mine or not stable or any(m.assignment is not None and m.assignment.topic_partitions for m in mine):
                return False  # not (yet) a member, or partitions are coming: on_assign will tell
            if self.consumer is consumer:
                self._joined_for = consumer
                self.ready.set()
                self.log.info("joined the group without partitions; ready")
            return self._joined_for is consumer
        except Exception as e:  # a probe never raises: not ready (yet), ask again next time
            self.log.debug("group membership probe failed", error=str(e))
            return False
        finally:
            self._join_probe_lock.release()

    # --- clients ----------------------------------------------------------------------------

    def _kafka_config(self) -> dict[str, Any]:
        return client_config(self.settings, self.rdkafka_logger)

    def _admin(self) -> AdminClient:
        """A long-lived admin client (thread-safe) for the readiness probe and topic limit reads."""
        if self._admin_client is None:
            self._admin_client = AdminClient(self._kafka_config())
        return self._admin_client

    def _refresh_limits_soon(self) -> None:
        """Ask for the written topics' limits again (after an abort or a rebuild: the broker may have
        rejected an output because a topic's config changed); the next batch applies the answer."""
        try:
            admin = self._admin()
            admin.poll(0)  # serve its log lines
            self.limits.request(admin, self._written_topics(), self.partition_counts, timeout=5)
        except Exception as e:  # never in the way of recovery
            self.log.warning("re-reading topic limits failed", error=str(e))

    def _written_topics(self) -> list[str]:
        """Topics this member produces to: sinks (outputs, repartition), the DLQ, changelogs seen so far."""
        topics = {sink.topic for st in self.topology.subtopologies for sink in st.sinks}
        if self.settings.error_policy == "dlq":
            topics.add(self.settings.effective_dlq_topic)
        return sorted(topics | self._state_topics_checked)

    def _create_clients(self) -> None:
        s = self.settings
        base = self._kafka_config()
        cc: dict[str, Any] = {
            **base,
            "group.id": s.application_id,
            "client.id": f"{s.application_id}-{self.instance_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": s.auto_offset_reset,
            "enable.partition.eof": False,
            "group.protocol": s.group_protocol,
            "error_cb": self._client_error,
            # librdkafka waits 1 s (fetch.queue.backoff.ms) once its local queue is full, which caps a
            # catch-up read far below what processing can do; a short backoff keeps fetching.
            "fetch.queue.backoff.ms": s.kafka_config.get("fetch.queue.backoff.ms", 10),
        }
        if s.group_protocol == "classic":
            # Co-partitioned inputs need partition p of each topic in one member: only the range
            # assignor guarantees that (eager); otherwise cooperative-sticky (incremental).
            cc["partition.assignment.strategy"] = "range" if self.topology.has_copartitioned_inputs else "cooperative-sticky"
            cc["session.timeout.ms"] = int(s.session_timeout * 1000)
            cc["heartbeat.interval.ms"] = max(500, int(s.session_timeout * 1000 / 4))
        elif self.topology.has_copartitioned_inputs:
            cc["group.remote.assignor"] = "range"
        pc: dict[str, Any] = {
            **base,
            "client.id": f"{s.application_id}-{self.instance_id}-producer",
            "enable.idempotence": True,
            "linger.ms": 5,
            # Same partition for the same key bytes as Kafka's Java clients and Kafka Streams.
            "partitioner": "murmur2_random",
            "error_cb": self._client_error,
        }
        if self.eos:
            pc["transactional.id"] = f"{s.application_id}-{self.instance_id}"
            pc["transaction.timeout.ms"] = int(s.transaction_timeout * 1000)
        else:
            pc["delivery.report.only.error"] = True
            pc["on_delivery"] = self._on_delivery
        batch = self.limits.batch_size()
        if batch is not None:  # librdkafka never splits a batch a topic rejects (runtime/production.py)
            pc["batch.size"] = batch
        self.producer = Producer(pc)
        self._bind_send()
        if self.eos:
            self._init_transactions()
        self.consumer = Consumer(cc)
        # A transactional call that takes longer than the transaction timeout cannot succeed (the
        # broker aborts the transaction): that bound makes a hung coordinator a rebuild, not a hang.
        self.ckpt = Checkpointer(self.consumer, self.producer, self.eos, timeout=s.transaction_timeout)
        self.ckpt.participants.append(self)
        self.ckpt.offset_metadata = self._offset_metadata
        self.restorer = Restorer({**base, "group.id": f"{s.application_id}-restore",
                                  "client.id": f"{s.application_id}-{self.instance_id}-restore"})
        self.errors = ErrorHandler(s.error_policy, s.effective_dlq_topic, s.application_id, self._send_raw)
        gen = self._generation

        def current(cb: Callable[[Consumer, list[TopicPartition]], None]) -> Callable[[Consumer, list[TopicPartition]], None]:
            # A consumer abandoned by _rebuild may still run callbacks (from its stuck close()):
            # they must not touch the tasks of the clients that replaced it.
            return lambda c, parts: cb(c, parts) if gen == self._generation else None

        self.consumer.subscribe(self.topology.source_topics, on_assign=current(self._on_assign),
                                on_revoke=current(self._on_revoke), on_lost=current(self._on_lost))

    def _init_transactions(self) -> None:
        """Fence any earlier producer of our transactional.id (and let the coordinator finish its
        open transaction). Bounded: a call that does not return raises CallTimedOut."""
        producer = self.producer
        assert producer is not None
        t = self.settings.transaction_timeout
        deadline = time.monotonic() + max(60.0, 2 * t)
        while True:
            try:
                call_with_deadline(lambda: producer.init_transactions(t), t + 5, "init_transactions")
                return
            except KafkaException as e:
                if e.args[0].retriable() and time.monotonic() < deadline and not self._stop.is_set():
                    self.heartbeat.beat()
                    continue
                raise

    def _client_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._unreachable_since = time.monotonic()  # readiness drops until a probe reaches a broker
        if err.fatal():
            self.log.error("fatal client error", error=str(err))
        elif err.code() not in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            self.log.warning("client error", error=str(err))

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None and self.ckpt is not None:
            self.ckpt.delivery_failed = err
            if err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
                # The checkpoint aborts; learning the size makes the replay hand this record to the
                # error policy before producing it (runtime/production.py).
                self.limits.learn(msg.topic(), record_size(msg.key(), msg.value(), msg.headers()))

    def send(self, topic: str, key: bytes | None, value: bytes | None, ts: int, partition: int) -> None:
        """The record collector sinks call (replaced per producer by a closure, see _bind_send)."""
        self._bind_send()
        self.send(topic, key, value, ts, partition)

    def _bind_send(self) -> None:
        producer = self.producer
        assert producer is not None
        if self._generation:  # a rebuilt producer: the old one may have failed on a rejected output
            self._refresh_limits_soon()
        produce = producer.produce
        check = self.limits.check
        max_bytes, max_ts, min_partitions, min_ts = self.limits.fast

        def bounds(b: int, hi: int, parts: int, lo: int) -> None:
            nonlocal max_bytes, max_ts, min_partitions, min_ts
            max_bytes, max_ts, min_partitions, min_ts = b, hi, parts, lo

        self.limits.on_change = bounds

        def send(topic: str, key: bytes | None, value: bytes | None, ts: int, partition: int) -> None:
            # What the broker would reject is a RecordProductionError of this record (the error
            # policy handles its input record), caught before produce: runtime/production.py.
            try:
                n = len(value) + len(key)  # type: ignore[arg-type]
            except TypeError:  # a None key or value (tombstone)
                n = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
            if n > max_bytes or ts > max_ts or ts < min_ts or partition >= min_partitions:
                check(topic, key, value, ts, partition)
            try:
                try:
                    produce(topic, value, key, partition, timestamp=ts)
                except BufferError:
                    self._produce(topic, value, key, partition, timestamp=ts)
            except KafkaException as e:
                err = per_record_error(e)
                if err is None:
                    raise
                raise RecordProductionError(topic, err.name(), f"{err.str()} (record of {n} bytes)") from e

        # Instance attribute shadows the method: sinks bind it once per task (tasks are rebuilt
        # with the producer after a fatal error).
        self.send = send  # type: ignore[method-assign]

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int = -1, **kw: Any) -> None:
        """``producer.produce``, serving delivery reports while the local queue is full."""
        producer = self.producer
        assert producer is not None
        deadline = 0.0
        while True:
            try:
                producer.produce(topic, value, key, partition, **kw)
                return
            except BufferError:
                # The queue drains only while brokers take records: past the transaction timeout
                # the checkpoint cannot commit anyway, so abort it instead of waiting forever.
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.settings.transaction_timeout
                elif now > deadline:
                    raise AbortCheckpoint(f"producer queue full for {self.settings.transaction_timeout:.0f}s "
                                          "(brokers unreachable?)") from None
                producer.poll(0.05)

    def send_watermark(self, topic: str, partition: int, key: bytes, ts: int, headers: list[tuple[str, bytes]]) -> None:
        """A watermark record to one partition of a repartition topic (inside the checkpoint)."""
        self._produce(topic, None, key, partition, timestamp=ts, headers=headers)

    def _send_raw(self, topic: str, key: bytes | None, value: bytes | None, ts: int, headers: list[tuple[str, bytes]]) -> None:
        # A dead-letter record too large for its topic is cut to fit, with a header saying so.
        key, value, headers = self.limits.fit(topic, key, value, headers)
        self._produce(topic, value, key, timestamp=ts, headers=headers)

    def _start_sources(self) -> None:
        for i, spec in enumerate(self.app._custom_sources):
            runner = SourceRunner(spec.name, spec.source, spec.topic, spec.key_serde, spec.value_serde,
                                  self._kafka_config(), index=i)
            runner.start()
            self.sources.append(runner)

    # --- broadcast inputs: every member reads all of them --------------------------------------------

    def _start_broadcasts(self, timeout: float = 60.0) -> None:
        self.broadcast_history: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.broadcast_consumer: Consumer | None = None
        topics = list(self.app._broadcasts)
        if not topics:
            return
        c = Consumer({**self._kafka_config(), "group.id": f"{self.settings.application_id}-broadcast",
                      "enable.auto.commit": False, "isolation.level": "read_committed", "enable.partition.eof": False})
        tps, ends = [], {}
        for t in topics:
            for p in range(self.partition_counts[t]):
                tps.append(TopicPartition(t, p, OFFSET_BEGINNING))
                ends[(t, p)] = c.get_watermark_offsets(TopicPartition(t, p), timeout=30, cached=False)[1]
        c.assign(tps)
        self.broadcast_consumer = c
        # Catch up before processing data, so the data side sees the broadcast state as of start.
        deadline = time.monotonic() + timeout
        todo = {tp for tp, end in ends.items() if end > 0}
        while todo and time.monotonic() < deadline:
            self._poll_broadcasts(0.2)
            for pos in c.position([TopicPartition(t, p) for t, p in todo]):
                if pos.offset >= ends[(pos.topic, pos.partition)]:
                    todo.discard((pos.topic, pos.partition))
        self.log.info("broadcast inputs loaded", topics=topics, records=len(self.broadcast_history))

    def _poll_broadcasts(self, timeout: float = 0.0) -> None:
        if self.broadcast_consumer is None:
            return
        for m in self.broadcast_consumer.consume(1000, timeout):
            if m.error() is not None:
                continue
            rec = (m.topic(), m.key(), m.value(), m.timestamp()[1])
            self.broadcast_history.append(rec)
            for task in self.tasks.values():
                if task.broadcast_handlers:
                    task.on_broadcast(*rec)

    # --- rebalance callbacks -----------------------------------------------------------------

    def _source_node(self, topic: str) -> SourceNode:
        return self.topology.subtopology_of(topic).sources[topic]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._joined_for = consumer  # readiness: joined (restoring is checked separately)
        if not partitions:
            consumer.incremental_assign([])
            if self.restorer is None or not self.restorer.active:
                self.ready.set()  # a member with no partitions (more pods than partitions) is ready
            return
        new_tasks: list[Task] = []
        for tp in partitions:
            st = self.topology.subtopology_of(tp.topic)
            key = (st.id, tp.partition)
            task = self.tasks.get(key)
            if task is None:
                task = Task(st, tp.partition, self, self._partitions_of,
                            store_factory=lambda name, p, st=st: self._make_store(st, name, p),
                            read_all=self._read_all_partitions,
                            forwarded=self.topology.forwarded_inputs(self._partitions_of),
                            event_time=self.topology.uses_event_time, backlog=self._has_backlog)
                self.tasks[key] = task
                new_tasks.append(task)
                if task.multi_input:
                    self.multi_input_tasks.append(task)
                if task.needs_ticks:
                    self.timed_tasks.append(task)
                if task.broadcast_handlers:
                    for rec in getattr(self, "broadcast_history", []):
                        task.on_broadcast(*rec)
            self.routes[(tp.topic, tp.partition)] = task.enqueue if task.multi_input else task.on_message[tp.topic]
            self.assigned.add((tp.topic, tp.partition))
        positioned = self._start_offsets(consumer, partitions)
        stateful = [t for t in new_tasks if t.participates or t.needs_watermarks]
        if stateful:
            # committed() waits for stable offsets (KIP-447): a previous owner's pending transaction is
            # resolved before we read changelog end offsets, so restoration sees all it committed.
            ask = [TopicPartition(tp.topic, tp.partition) for tp in partitions
                   if self.tasks[(self.topology.subtopology_of(tp.topic).id, tp.partition)] in stateful]
            for c in self._committed_stable(consumer, ask):
                task = self.tasks[(self.topology.subtopology_of(c.topic).id, c.partition)]
                task.restore_stream_time(c.topic, c.metadata)
                self._assigned_committed[(c.topic, c.partition)] = c.offset
        restoring: list[Task] = []
        assert self.restorer is not None
        for task in stateful:
            task.snapshot_time()
            if task.stores and self.restorer.add((task.subtopology.id, task.partition), list(task.stores.values()), self.eos):
                restoring.append(task)
            else:
                task.recover()
        consumer.incremental_assign(positioned)
        if restoring:
            consumer.pause([TopicPartition(t, task.partition) for task in restoring for t in task.subtopology.sources
                            if (t, task.partition) in self.assigned])
        metrics.REBALANCES.labels("assigned").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        self.log.info("partitions assigned", partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in positioned],
                      tasks=sorted(t.id for t in self.tasks.values()), restoring=sorted(t.id for t in restoring))
        if not self.restorer.active:
            self.ready.set()

    def _committed_stable(self, consumer: Consumer, tps: list[TopicPartition]) -> list[TopicPartition]:
        """Committed offsets (with metadata), waiting while a previous owner's transaction that
        holds offsets for them is still open (UNSTABLE_OFFSET_COMMIT, KIP-447). Treating such a
        partition as "no offset committed" would reprocess it from the start."""
        deadline = time.monotonic() + self.settings.transaction_timeout + 60
        result: dict[TP, TopicPartition] = {}
        todo = list(tps)
        while todo:
            try:
                got = consumer.committed(todo, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
            except KafkaException as e:
                if time.monotonic() > deadline:
                    raise
                self.log.info("waiting for stable committed offsets", error=str(e))
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
                self.log.info("waiting for stable committed offsets", partitions=[f"{t.topic}[{t.partition}]" for t in todo])
                time.sleep(0.5)
        return [result[(tp.topic, tp.partition)] for tp in tps]

    def _start_offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Committed offsets win; otherwise (or when overriding) each source's start position."""
        out = [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in partitions]
        explicit = [tp for tp in out if self._source_node(tp.topic).start.kind != "group"]
        if not explicit:
            return out
        ask = [TopicPartition(tp.topic, tp.partition) for tp in explicit
               if not self._source_node(tp.topic).start.override_committed]
        committed: dict[TP, int] = {}
        if ask:
            for c in self._committed_stable(consumer, ask):
                committed[(c.topic, c.partition)] = c.offset
        by_ts: list[TopicPartition] = []
        for tp in explicit:
            start = self._source_node(tp.topic).start
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

    def _drop_partitions(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.routes.pop((tp.topic, tp.partition), None)
            self.assigned.discard((tp.topic, tp.partition))
        for key, task in list(self.tasks.items()):
            if not any((t, task.partition) in self.assigned for t in task.subtopology.sources):
                del self.tasks[key]
                if task in self.multi_input_tasks:
                    self.multi_input_tasks.remove(task)
                if task in self.timed_tasks:
                    self.timed_tasks.remove(task)
                if self.restorer is not None:
                    self.restorer.remove_task(key)
                task.close()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        try:
            self._commit()
        except AbortCheckpoint as e:
            # Nothing of this checkpoint is visible; the next owner replays from the last commit.
            self.log.warning("commit on revoke failed", error=str(e))
            try:
                self._abort_and_rewind()
            except FatalClientError:
                self._rebuild_needed = True
        except FatalClientError as e:
            # The producer is beyond use: drop the checkpoint's buffers, rebuild after the callback.
            self.log.warning("commit on revoke failed; the producer will be rebuilt", error=str(e))
            self.aborted()
            self._rebuild_needed = True
        self._drop_partitions(partitions)
        metrics.REBALANCES.labels("revoked").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self.assigned))
        self.log.info("partitions revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.log.warning("partitions lost", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])
        # Another member may own them already: our checkpoint must not commit.
        self._drop_partitions(partitions)
        try:
            self._abort_and_rewind()
        except FatalClientError:
            self._rebuild_needed = True

    def _has_backlog(self, topic: str, partition: int) -> bool:
        """Records are waiting in ``topic[partition]`` (from the last fetch; no broker round trip)."""
        if self.consumer is None or (topic, partition) not in self.assigned:
            return False
        try:
            tp = TopicPartition(topic, partition)
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            pos = self.consumer.position([tp])[0].offset
        except KafkaException:
            return True  # unknown: do not declare it idle
        if pos < 0:
            # Nothing consumed since assignment: compare with where consumption starts. Calling a
            # partition idle here would let its watermark jump to max-1 (no disorder bound) and
            # make the records it is about to replay late downstream.
            start = self._assigned_committed.get((topic, partition), -1)
            return high > max(start, 0)
        return high > pos

    def _partitions_of(self, topic: str) -> int:
        n = self.partition_counts.get(topic)
        if n is None:
            admin = self._admin()
            n = partition_count(admin, topic) or 1
            self.partition_counts[topic] = n
        return n

    # --- state ---------------------------------------------------------------------------------------

    def _make_store(self, st: Any, name: str, partition: int) -> Store:
        s = self.settings
        topic = f"{s.application_id}-{name}-changelog"
        self._ensure_changelog(topic, self.partition_counts[next(iter(st.sources))])

        def backend() -> Backend:
            if s.state_backend == "memory":
                return MemoryBackend()
            from kstreamlet.state.rocksdb import RocksDBBackend

            path = Path(s.state_dir) / s.application_id / self._state_subdir / name / str(partition)
            deadline = time.monotonic() + 30
            while True:
                try:
                    return RocksDBBackend(path, block_cache_mb=s.rocksdb_block_cache_mb)
                except Exception as e:
                    # The previous owner in this pod may still be closing it (lock held).
                    if "lock" not in str(e).lower() or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

        store = Store(name, partition, backend(), topic, self._send_changelog,
                      end_offset=None if self.eos else self._end_offset, backend_factory=backend)
        store.max_record_bytes = self.limits.budget(topic)  # a larger state write fails its record
        return store

    @property
    def _state_subdir(self) -> str:
        idx = os.environ.get("KSTREAMLET_WORKER_INDEX")
        return f"w{idx}" if idx else "."

    def _ensure_changelog(self, topic: str, partitions: int) -> None:
        if topic in self._state_topics_checked:
            return
        admin = self._admin()
        n = partition_count(admin, topic)
        if n is None:
            create_topics(admin, {topic: partitions}, config={"cleanup.policy": "compact"}, exist_ok=True)
        elif n != partitions:
            raise TopologyError(f"changelog topic {topic} has {n} partitions but its inputs have {partitions}")
        self.limits.refresh(admin, [topic], {topic: partitions})
        self._state_topics_checked.add(topic)
        self.partition_counts[topic] = partitions

    def _send_changelog(self, topic: str, key: bytes, value: bytes | None, partition: int, on_delivery: Any) -> None:
        if on_delivery is None:
            self._produce(topic, value, key, partition)
        else:
            self._produce(topic, value, key, partition, on_delivery=on_delivery)

    def _read_all_partitions(self, topic: str, timeout: float = 60.0) -> dict[int, dict[bytes, bytes]]:
        """Latest committed value per key of every partition of a changelog (union list state)."""
        c = Consumer({**self._kafka_config(), "group.id": f"{self.settings.application_id}-union",
                      "enable.auto.commit": False, "isolation.level": "read_committed"})
        try:
            n = self.partition_counts.get(topic) or self._partitions_of(topic)
            ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)[1] for p in range(n)}
            todo = {p for p, end in ends.items() if end > 0}
            out: dict[int, dict[bytes, bytes]] = {p: {} for p in range(n)}
            if todo:
                c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
            deadline = time.monotonic() + timeout
            while todo and time.monotonic() < deadline:
                for m in c.consume(1000, 0.2):
                    if m.error() is None:
                        if m.value() is None:
                            out[m.partition()].pop(m.key(), None)
                        else:
                            out[m.partition()][m.key()] = m.value()
                for pos in c.position([TopicPartition(topic, p) for p in todo]):
                    if pos.offset >= ends[pos.partition]:
                        todo.discard(pos.partition)
            if todo:
                raise TopologyError(f"could not read changelog {topic} partitions {sorted(todo)} in {timeout}s")
            return out
        finally:
            c.close()

    def _end_offset(self, topic: str, partition: int) -> int | None:
        assert self.restorer is not None
        try:
            return self.restorer.end_offset(topic, partition)
        except KafkaException:
            return None

    def _offset_metadata(self, topic: str, partition: int) -> str | None:
        st = self.topology.subtopology_of(topic)
        task = self.tasks.get((st.id, partition))
        if task is None or not task.needs_watermarks:
            return None
        return task.stream_time_metadata(topic) or None

    # Checkpoint participant: every task's stores and stream time commit/abort with the checkpoint.
    def prepare_commit(self) -> None:
        for t in self.tasks.values():
            if t.participates:
                t.prepare_commit()

    def committed(self) -> None:
        for t in self.tasks.values():
            if t.participates or t.needs_watermarks:
                t.committed()

    def aborted(self) -> None:
        for t in self.tasks.values():
            t.aborted()
        self._refresh_limits_soon()  # the replay must catch an output the broker rejected

    def _restore_step(self) -> None:
        assert self.restorer is not None and self.consumer is not None
        for key in self.restorer.poll():
            task = self.tasks.get(key)
            if task is None:
                continue
            task.recover()
            self.consumer.resume([TopicPartition(t, task.partition) for t in task.subtopology.sources
                                  if (t, task.partition) in self.assigned])
            self.log.info("task restored; processing resumes", task=task.id)
        if not self.restorer.active:
            self.ready.set()

    def _tick(self) -> None:
        now = int(time.time() * 1000)
        ckpt = self.ckpt
        assert ckpt is not None
        for task in self.timed_tasks:
            if self.restorer is not None and self.restorer.is_restoring((task.subtopology.id, task.partition)):
                continue
            if task.time_due(now):
                if self.eos and not ckpt.in_transaction:
                    ckpt.begin()
                ckpt.work_pending = True  # commit even without records (timer outputs, idle markers)
                task.tick(now)

    # --- the loop -------------------------------------------------------------------------------

    _rebuild_needed = False

    def _loop(self) -> None:
        s = self.settings
        interval = s.commit_interval
        next_commit = time.monotonic() + interval
        batch = s.poll_batch_size
        while not self._stop.is_set():
            self.heartbeat.beat()
            for src in self.sources:
                if src.error is not None:
                    raise RuntimeError(f"source {src.name!r} failed: {src.error!r}") from src.error
            try:
                restoring = bool(self.restorer is not None and self.restorer.active)
                if restoring:
                    self._restore_step()
                msgs = self.consumer.consume(batch, 0.0 if restoring else 0.05)  # type: ignore[union-attr]
                if msgs:
                    self._process(msgs)
                if self.timed_tasks:
                    self._tick()
                if self.broadcast_consumer is not None:
                    if self.eos and not self.ckpt.in_transaction:  # type: ignore[union-attr]
                        self.ckpt.begin()  # type: ignore[union-attr]
                    self._poll_broadcasts()
                if self._rebuild_needed:
                    raise FatalClientError("producer fenced during rebalance")
                now = time.monotonic()
                if now >= next_commit:
                    self._commit()
                    next_commit = now + interval
            except ProcessingError as e:
                self.log.error("processing failed with error_policy=fail; stopping", error=str(e))
                try:
                    self._abort_and_rewind()
                except FatalClientError as fe:
                    self.log.warning("abort failed while stopping; nothing was committed", error=str(fe))
                raise
            except (AbortCheckpoint, FatalClientError, KafkaException) as e:
                self._recover(e)
                next_commit = time.monotonic() + interval

    def _recover(self, e: Exception) -> None:
        """Abortable → abort and replay from the last commit; fenced/fatal/unabortable → rebuild.
        Every client error ends here, so no outage or fence ends the member."""
        if isinstance(e, KafkaException):
            kind = classify(e)
            code = e.args[0].code()
            if kind == "fatal" or code in (KafkaError._STATE, KafkaError._FENCED):
                e = FatalClientError(str(e))
            else:
                e = AbortCheckpoint(str(e))
        if isinstance(e, AbortCheckpoint):
            self.log.warning("checkpoint aborted; replaying from last commit", error=str(e))
            try:
                self._abort_and_rewind()
                return
            except FatalClientError as fe:
                e = fe
        self._rebuild(str(e))

    def _process(self, msgs: list[Any]) -> None:
        ckpt = self.ckpt
        assert ckpt is not None
        if self.limits.pending is not None:  # topic limits re-read after an abort: apply before the replay
            self.limits.apply_pending(wait=1.0)
        if self.eos and not ckpt.in_transaction:
            ckpt.begin()
        routes = self.routes
        pending = ckpt.pending
        base = ckpt.base
        handle = self.errors.handle
        n = 0
        # Messages of one partition come in runs: look the route up, note the rewind offset and
        # record the commit offset once per run, not per record.
        cur_t: str | None = None
        cur_p = -1
        tp: TP = ("", -1)
        route: Callable[[Message], None] | None = None
        last_off = -1
        try:
            for m in msgs:
                err = m.error()
                if err is not None:
                    self._consumer_error(err)
                    continue
                p = m.partition()
                t = m.topic()
                if p != cur_p or t != cur_t:
                    if route is not None:
                        pending[tp] = last_off + 1
                    cur_p, cur_t = p, t
                    tp = (t, p)
                    route = routes.get(tp)
                    if route is not None:
                        base.setdefault(tp, m.offset())
                if route is None:
                    continue  # revoked while in flight
                try:
                    route(m)
                except (KafkaException, ProcessingError, FatalClientError, AbortCheckpoint):
                    raise
                except Exception as e:
                    handle(m, e)
                last_off = m.offset()
                n += 1
            if route is not None:
                pending[tp] = last_off + 1
        except BaseException:
            # The consumer's position is past the whole batch: when processing stops early (an
            # abort), every partition of the batch must rewind, not only those already reached.
            for m in msgs:
                if m.error() is None:
                    base.setdefault((m.topic(), m.partition()), m.offset())
            raise
        for task in self.multi_input_tasks:
            task.drain(self._process_one)
        self.records_processed += n
        # Serve delivery reports once per batch: under EOS they would otherwise pile up until the
        # commit and fill the producer queue (each BufferError costs a poll with a timeout).
        self.producer.poll(0)  # type: ignore[union-attr]
        if self.first_record_at is None and n:
            self.first_record_at = time.monotonic()
            self.log.info("first record processed", seconds_since_start=round(self.first_record_at - self.started_at, 3))

    def _process_one(self, m: Message) -> None:
        task_route = self.tasks[(self.topology.subtopology_of(m.topic()).id, m.partition())].on_message[m.topic()]
        try:
            task_route(m)
        except (KafkaException, ProcessingError, FatalClientError, AbortCheckpoint):
            raise
        except Exception as e:
            self.errors.handle(m, e)

    def _consumer_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise FatalClientError(f"consumer: {err}")
        self.log.warning("consumer error", error=str(err))

    def _commit(self) -> None:
        assert self.ckpt is not None
        try:
            self.ckpt.commit()
        except KafkaException as e:
            self._on_rejected_output(e)
            raise AbortCheckpoint(str(e)) from e
        except (AbortCheckpoint, FatalClientError) as e:
            self._on_rejected_output(e)
            raise

    def _on_rejected_output(self, e: BaseException) -> None:
        """The broker rejected an output although it passed the checks (a topic's config was
        changed while running): the abort that follows re-reads the limits (``aborted``), so that
        the replay hands the record to the error policy."""
        if rejected_output(e):
            self.log.warning("the broker rejected an output record; topic limits are re-read before the replay",
                             error=str(e))

    def _abort_and_rewind(self) -> None:
        assert self.ckpt is not None and self.consumer is not None
        rewind = self.ckpt.abort(self.assigned)
        for (topic, part), off in rewind.items():
            try:
                self.consumer.seek(TopicPartition(topic, part, off))
            except KafkaException as e:
                # Not fetching yet (just assigned): its position is the committed offset anyway.
                self.log.warning("seek failed", topic=topic, partition=part, offset=off, error=str(e))

    def _rebuild(self, reason: str = "") -> None:
        """Fenced/fatal/hung: drop every task and buffered record, make new clients, rejoin.

        Old clients are closed within a bound and otherwise abandoned (runtime/deadline.py);
        their callbacks no longer reach this member. New clients are retried with backoff for
        as long as the cluster is unreachable: the member never exits for an outage. Its
        readiness is down meanwhile; liveness stays up (the loop keeps beating)."""
        self.log.error("producer fenced or fatal; rebuilding clients and rejoining", error=reason)
        self._degraded = True
        self._generation += 1
        self._rebuild_needed = False
        consumer, restorer = self.consumer, self.restorer
        self.consumer = None
        self.restorer = None
        self.producer = None
        self.ckpt = None
        if consumer is not None:
            self._close_bounded(consumer.close, "consumer.close")
        for task in self.tasks.values():
            task.close()
        self.tasks.clear()
        self.routes.clear()
        self.assigned.clear()
        self.multi_input_tasks.clear()
        self.timed_tasks.clear()
        if restorer is not None:
            self._close_bounded(restorer.close, "restorer.close")
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._create_clients()
                self._degraded = False
                self.log.info("clients rebuilt; rejoining the group")
                return
            except (KafkaException, CallTimedOut) as e:
                self.log.warning("cluster unreachable; retrying client creation", error=str(e), retry_in=backoff)
                self.consumer = None
                self.producer = None
            end = time.monotonic() + backoff
            while time.monotonic() < end and not self._stop.is_set():
                self.heartbeat.beat()
                time.sleep(0.1)
            backoff = min(backoff * 2, 10.0)

    def _close_bounded(self, close: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
        try:
            call_with_deadline(close, timeout, what)
        except CallTimedOut as e:
            self.log.warning("client close abandoned", error=str(e))
        except Exception as e:  # the old clients are beyond use; close is best effort
            self.log.warning("closing a client failed", what=what, error=str(e))

    def _shutdown(self) -> None:
        """Last commit, leave the group, close. Every step is bounded so that the whole stays
        inside ``shutdown_timeout`` even while the brokers are down (the signal handler's timer
        is the last resort)."""
        t0 = time.monotonic()
        end = t0 + max(1.0, self.settings.shutdown_timeout - 3)

        def left(share: float = 1.0) -> float:
            return max(0.5, (end - time.monotonic()) * share)

        try:
            ckpt = self.ckpt
            if ckpt is not None and ckpt.dirty and not self._degraded:
                ckpt.timeout = min(ckpt.timeout, left(0.25))
                ckpt.slack = min(ckpt.slack, 1.0)
                try:
                    self._commit()
                except (AbortCheckpoint, FatalClientError) as e:
                    self.log.warning("final commit failed; aborting", error=str(e))
                    try:
                        ckpt.timeout = min(ckpt.timeout, left(0.25))
                        ckpt.abort(set())
                    except Exception as ae:  # the coordinator aborts it when our successor fences us
                        self.log.warning("final abort failed", error=str(ae))
            for src in self.sources:
                src.stop()
            if self.consumer is not None:
                # Leaves the group; on_revoke commits nothing new and closes the tasks.
                self._close_bounded(self.consumer.close, "consumer.close", left(0.6))
                self._generation += 1  # a close still running may call back no more
            for task in self.tasks.values():
                task.close()
            self.tasks.clear()
            if self.restorer is not None:
                self._close_bounded(self.restorer.close, "restorer.close", left(0.5))
            if self.producer is not None:
                self.producer.flush(min(10.0, left(0.8)))
        finally:
            self.log.info("member stopped", records=self.records_processed,
                          shutdown_seconds=round(time.monotonic() - t0, 3))

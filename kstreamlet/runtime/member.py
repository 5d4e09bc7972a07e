"""One consumer-group member: its clients, and the loop poll → route → tick → maybe commit.

Flow of a record: ``consumer.consume()`` returns a batch → :meth:`TaskManager.process`
routes each message by (topic, partition) to its task (runtime/tasks.py) → the task's
compiled node chain runs → sinks send through the :class:`RecordCollector`
(runtime/collector.py, ``producer.produce``) → every ``commit_interval`` the
:class:`Checkpointer` (runtime/checkpoint.py) gathers the tasks' offsets and commits (one
transaction under exactly-once).

Rebalances: on assignment the task manager creates tasks and resolves start offsets; on
revocation the current checkpoint is committed first (so the next owner starts exactly after
it), then the tasks are closed; on loss the checkpoint is aborted and the rest rewound.
Errors: an abortable one aborts the checkpoint and replays from the last commit; a fenced,
fatal or hung client is rebuilt (every task dropped, new clients, rejoin) — no client error
or outage ends the member (docs/architecture.md, "Broker and coordinator outages").
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from typing import Any, Callable, Iterable, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kstreamlet import metrics
from kstreamlet.config import WORKER_INDEX_ENV, Settings
from kstreamlet.errors import AccessError, ConfigError, ProcessingError
from kstreamlet.logging import librdkafka_logger
from kstreamlet.observability import Heartbeat, start_http_server, worker_http_port
from kstreamlet.observability.access import HttpAccess
from kstreamlet.observability.kafka_stats import STATISTICS_INTERVAL_MS, ConsumerStats, ProducerStats
from kstreamlet.query import InstanceInfo, MetadataBoard, QueryService, advertised_url, metadata_topic
from kstreamlet.query.service import register as register_queries, unregister as unregister_queries
from kstreamlet.runtime.acls import access_error, acl_error, authorization_kind, missing_topic_acls, required_acls
from kstreamlet.runtime.async_io import AsyncRuntime
from kstreamlet.runtime.broadcasts import BroadcastReader, read_all_partitions
from kstreamlet.runtime.checkpoint import AbortCheckpoint, Checkpointer, FatalClientError, classify
from kstreamlet.runtime.clients import KafkaClients, client_config, consumer_config, producer_config
from kstreamlet.runtime.collector import RecordCollector
from kstreamlet.runtime.deadline import CallTimedOut, call_with_deadline
from kstreamlet.runtime.error_policy import ErrorHandler
from kstreamlet.runtime.listener import RuntimeListener
from kstreamlet.runtime.production import OutputLimits, rejected_output
from kstreamlet.runtime.readiness import Readiness
from kstreamlet.runtime.task import Task
from kstreamlet.runtime.tasks import TaskManager
from kstreamlet.runtime.topics import TopicAdmin, create_topics, prepare_topics, resume_now
from kstreamlet.runtime.topology_check import check_topology
from kstreamlet.sources.base import SourceRunner
from kstreamlet.state.factory import StoreFactory
from kstreamlet.state.recovery import Restorer
from kstreamlet.topology.builder import SubTopology, Topology



class AppLike(Protocol):
    """What the runtime needs of an :class:`~kstreamlet.App`: its settings and built topology
    (the runtime never imports ``App``: the app layer sits above it)."""

    settings: Settings

    def topology(self) -> Topology: ...

log = structlog.get_logger("kstreamlet.member")


class Member:
    """A consumer-group member running a topology until stopped.

    ``Member(app, instance_id)`` runs ``app.topology()`` with ``app.settings``;
    ``Member(topology, instance_id, settings=...)`` runs a built topology."""

    def __init__(self, app: AppLike | Topology, instance_id: str, install_signal_handlers: bool = True, *,
                 settings: Settings | None = None, clients: KafkaClients | None = None,
                 listeners: Iterable[RuntimeListener] = ()) -> None:
        if isinstance(app, Topology):
            if settings is None:
                raise TypeError("Member(topology, ...) needs settings=")
            self.topology = app
        else:
            self.topology = app.topology()
            settings = settings or app.settings
        self.settings = s = settings
        self.instance_id = instance_id
        self.clients = clients or KafkaClients()
        self.listeners = list(listeners)
        if s.tracing != "off":  # W3C trace context for new traces; OpenTelemetry spans per checkpoint
            from kstreamlet.observability import tracing

            tracing.configure(s.tracing)
            if s.tracing == "otel":
                self.listeners.append(tracing.CheckpointSpans(s.application_id, instance_id))
        self.eos = s.processing_guarantee == "exactly_once"
        self.log = log.bind(app=s.application_id, instance=instance_id)
        self._stop = threading.Event()
        self._install_signals = install_signal_handlers
        #: librdkafka's log lines (every client of this member) become structlog events with app/instance.
        self.rdkafka_logger = librdkafka_logger(app=s.application_id, instance=instance_id)
        #: A refused login, an untrusted certificate or a missing ACL reported by a client's error
        #: callback (librdkafka retries those forever): the loop ends the member with it.
        self._access_problem: BaseException | KafkaError | None = None
        #: Set when the member ends for an AccessError: the shutdown commits nothing more.
        self._access_failed = False
        self.topics = TopicAdmin(lambda: self.clients.admin({**self._kafka_config(), "error_cb": self._admin_error}))
        #: What the broker accepts per written topic (sizes, timestamps): runtime/production.py.
        self.limits = OutputLimits(s.kafka_config)
        self.tasks = TaskManager(self.topology, self._new_task, self.eos, s.transaction_timeout)
        self.stores = StoreFactory(s, self._ensure_changelog, self._send_changelog,
                                   None if self.eos else self._end_offset, self.limits.budget)
        self.readiness = Readiness(lambda: self.topics.client, s.application_id, f"{s.application_id}-{instance_id}")
        self.ready = self.readiness.ready
        self.sources: list[SourceRunner] = []
        self.broadcasts: BroadcastReader | None = None
        self.consumer: Consumer | None = None
        self.collector: RecordCollector | None = None
        self.ckpt: Checkpointer | None = None
        self.restorer: Restorer | None = None
        self.errors: ErrorHandler | None = None
        #: Interactive queries (kstreamlet/query): /stores and /metadata, app.query(store).
        self.query: QueryService | None = None
        self.records_processed = 0
        self.started_at = time.monotonic()
        self.first_record_at: float | None = None
        #: True while the member cannot make progress (its clients are being rebuilt after a
        #: broker/coordinator outage or a fence): readiness drops, liveness stays healthy.
        self._degraded = False
        #: Bumped when clients are rebuilt: callbacks of abandoned clients become no-ops.
        self._generation = 0
        self._rebuild_needed = False
        self._rebuild_reason = ""
        # Metrics (kstreamlet/metrics.py, docs/metrics.md): every series known at start exists from now.
        #: Assigned input partitions -> wall clock of their assignment (lag in seconds before a first record).
        self.assigned_at: dict[tuple[str, int], float] = {}
        #: Timestamps (ms) of sampled input records of the open checkpoint: end-to-end latency at its commit.
        self._e2e_samples: list[int] = []
        self._records_in: dict[str, Any] = {}
        metrics.init_member(self.topology.source_topics, self._written_topics(), s.error_policy,
                            s.commit_interval, time.time())

    @property
    def producer(self) -> Producer | None:
        return self.collector.producer if self.collector is not None else None

    @property
    def partition_counts(self) -> dict[str, int]:
        return self.topics.partition_counts

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
        #: Who may call /stores and /metadata, and the port's TLS (observability/access.py).
        self.http_access = HttpAccess.from_settings(self.settings)
        self.http_server = self._start_http()
        try:
            try:
                self._check_bootstrap()
                self._check_topic_acls()
                # Fail fast on a topology change that would re-map state (runtime/topology_check.py).
                check_topology(self.topology, self.settings, self.topics.client, self._kafka_config(),
                               self.clients.consumer, self.clients.producer)
                prepare_topics(self.topology, self.settings, self.topics)
                self.limits.refresh(self.topics.client, self._written_topics(), self.partition_counts)
                self._start_sources()
                self._create_clients()
                self._start_broadcasts()
                self._raise_access_problem()
            except (KafkaException, FatalClientError, AbortCheckpoint, CallTimedOut, TimeoutError) as e:
                # A refused login, certificate or ACL at start: one line naming it (else as before).
                ae = self._as_access_error(e)
                if ae is None:
                    raise
                raise ae from None
        except BaseException:
            if self.http_server is not None:
                self.http_server.shutdown()
            raise
        self.log.info("member started", topics=self.topology.source_topics,
                      guarantee=self.settings.processing_guarantee, group_protocol=self.settings.group_protocol)
        try:
            self._start_queries()
            self._loop()
        finally:
            self._shutdown()
            self._stop_queries()
            if self.http_server is not None:
                self.http_server.shutdown()

    def _start_http(self) -> Any:
        if self.settings.http_port is None:
            return None
        port = worker_http_port(self.settings.http_port)
        try:
            return start_http_server(port, health=self.heartbeat, ready=self.is_ready, host=self.settings.http_host,
                                     queries=self._no_queries, access=self.http_access)
        except OSError as e:
            raise ConfigError(f"cannot serve /healthz /readyz /metrics on port {port} (setting http_port, "
                              f"env KSTREAMLET_HTTP_PORT): {e.strerror or e}") from None

    def _start_queries(self) -> None:
        """Interactive queries: the service, and with an HTTP port the metadata every instance
        publishes (its URL and tasks: ``<application_id>-query-metadata``) to route keys to owners."""
        s, server = self.settings, self.http_server
        index = int(os.environ.get(WORKER_INDEX_ENV, "0") or 0)
        access = self.http_access
        url = advertised_url(s.advertised_url, server.port, index, access.scheme) if server is not None else None
        self.query = QueryService(s, self.topology, self.tasks, self.topics.partitions_of, self.instance_id, url,
                                  unavailable=self._query_unavailable, access=access)
        register_queries(self.query)
        if server is None or url is None:
            return
        try:
            create_topics(self.topics.client, {metadata_topic(s.application_id): 1},
                          config={"cleanup.policy": "compact"}, exist_ok=True)
        except (KafkaException, TimeoutError) as e:  # queries still answer for this member's own keys
            self.log.warning("cannot create the query metadata topic; queries of keys on other instances answer 503",
                             topic=metadata_topic(s.application_id), error=str(e))
            server.queries = self.query.handle
            return
        board = MetadataBoard(InstanceInfo(self.instance_id, url, f"{s.application_id}-{self.instance_id}"),
                              s.application_id, self._kafka_config(), tasks=lambda: list(self.tasks.tasks),
                              make_consumer=self.clients.consumer, make_producer=self.clients.producer)
        board.start()
        self.query.board = board
        server.queries = self.query.handle
        self.log.info("serving interactive queries", url=url, access=access.describe())

    def _no_queries(self, path: str, query: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """/stores and /metadata before the query service runs (start-up) and after it stopped."""
        what = "stopping" if self._stop.is_set() else "starting"
        return 503, {"Retry-After": "1"}, f'{{"error": "the instance is {what}"}}'.encode()

    def _query_unavailable(self) -> str | None:
        if self._stop.is_set():
            return "the instance is stopping"
        if self._degraded:
            return "its Kafka clients are being rebuilt"
        return None

    def _stop_queries(self) -> None:
        query = self.query
        if query is None:
            return
        unregister_queries(query)
        if self.http_server is not None:
            self.http_server.queries = self._no_queries
        if query.board is not None:
            query.board.stop()

    def _check_bootstrap(self, timeout: float = 8.0) -> None:
        """Fail at start, in one line, when no broker answers at the bootstrap address, or when it
        refuses the login or the TLS handshake (wrong password, unknown user, untrusted CA: the probe's
        error callback says so within a second or two; AccessError names the setting).

        The probe is a client of its own with librdkafka's log off: its error callback is served
        every second, which must not flush its connection-refused lines into the log."""
        problems: list[KafkaError] = []
        probe = self.clients.admin({**client_config(self.settings), "log_level": 0,
                                    "error_cb": lambda err: problems.append(err)})
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
                return
            except KafkaException as e:
                probe.poll(0)  # serve the error callback
                causes: list[BaseException | KafkaError] = [e, *problems]
                for cause in causes:
                    ae = access_error(self.settings, cause)
                    if ae is not None:
                        raise ae from None
                if time.monotonic() < deadline:
                    continue
                err = e.args[0] if e.args else e
                detail = err.str() if isinstance(err, KafkaError) else str(err)
                raise ConfigError(
                    f"cannot reach Kafka at {self.settings.bootstrap_servers} within {timeout:g}s (setting "
                    f"bootstrap_servers, env KSTREAMLET_BOOTSTRAP_SERVERS; security: security_protocol, sasl_*, "
                    f"ssl_*): {detail}") from None

    # --- access: credentials, certificates, ACLs (runtime/acls.py, docs/security.md) ---------------

    def _admin_error(self, err: KafkaError) -> None:
        """Error callback of the member's admin client: remembers a refused login or certificate."""
        if self._is_access_problem(err):
            self._access_problem = err

    def _is_access_problem(self, err: KafkaError) -> bool:
        return access_error(self.settings, err) is not None

    def _checked_topics(self) -> list[str]:
        return sorted(set(self.topology.source_topics) | set(self.topology.broadcasts) | set(self._written_topics()))

    def _as_access_error(self, e: BaseException | KafkaError | None = None) -> AccessError | None:
        """The AccessError for ``e`` or for what an error callback reported, else None. A topic
        authorization failure is narrowed to the topic and operation by asking the broker."""
        for cause in (e, self._access_problem):
            if cause is None:
                continue
            admin: Any = None
            if authorization_kind(cause) == "TOPIC":  # only then is the broker asked which ACL is missing
                try:
                    admin = self.topics.client
                except Exception:
                    admin = None
            ae = access_error(self.settings, cause, admin, self.topology, self._checked_topics())
            if ae is not None:
                return ae
        return None

    def _raise_access_problem(self) -> None:
        problem = self._access_problem
        if problem is None:
            return
        ae = self._as_access_error(problem)
        if ae is not None:
            raise self._access_fatal(ae)
        self._access_problem = None

    def _access_fatal(self, ae: AccessError) -> AccessError:
        """Log that the member ends for ``ae`` (returned, to be raised)."""
        self._access_failed = True
        self.log.error("access refused by Kafka; stopping", error=str(ae))
        return ae

    def _check_topic_acls(self) -> None:
        """Under SASL/SSL: the existing input and output topics' ACLs, asked of the broker
        (authorized operations), before anything else runs; a missing one is an AccessError."""
        s = self.settings
        proto = str(s.security_protocol or s.kafka_config.get("security.protocol") or "PLAINTEXT").upper()
        if proto == "PLAINTEXT":
            return
        topics = sorted(set(self.topology.source_topics) | set(self.topology.broadcasts)
                        | {sink.topic for st in self.topology.subtopologies for sink in st.sinks})
        try:
            missing = missing_topic_acls(self.topics.client, required_acls(self.topology, s), topics)
        except Exception as e:  # an older broker or a fake client: the run-time checks remain
            self.log.debug("topic ACL check skipped", error=str(e))
            return
        if missing:
            raise acl_error(s, missing)

    def is_ready(self) -> bool:
        """Readiness (``/readyz``): see runtime/readiness.py."""
        if self._stop.is_set():
            return False
        restorer = self.restorer
        return self.readiness.check(self.consumer, restorer is None or bool(restorer.active), self._degraded)

    # --- clients ----------------------------------------------------------------------------

    def _kafka_config(self) -> dict[str, Any]:
        return client_config(self.settings, self.rdkafka_logger)

    def _refresh_limits_soon(self) -> None:
        """Ask for the written topics' limits again (after an abort or a rebuild: the broker may have
        rejected an output because a topic's config changed); the next batch applies the answer."""
        try:
            admin = self.topics.client
            admin.poll(0)  # serve its log lines
            self.limits.request(admin, self._written_topics(), self.partition_counts, timeout=5)
        except Exception as e:  # never in the way of recovery
            self.log.warning("re-reading topic limits failed", error=str(e))

    def _written_topics(self) -> list[str]:
        """Topics this member produces to: sinks (outputs, repartition), the DLQ, changelogs seen so far."""
        topics = {sink.topic for st in self.topology.subtopologies for sink in st.sinks}
        if self.settings.error_policy == "dlq":
            topics.add(self.settings.effective_dlq_topic)
        return sorted(topics | self.topics.changelogs)

    def _create_clients(self) -> None:
        s = self.settings
        base = self._kafka_config()
        collector: list[RecordCollector] = []  # the producer's delivery callback reaches its own collector
        cc = consumer_config(s, self.topology, base, self.instance_id, self._client_error)
        pc = producer_config(s, base, self.instance_id, self._client_error, self.limits.batch_size(),
                             on_delivery=lambda err, msg: collector[0].on_delivery(err, msg))
        # librdkafka statistics: consumer lag and records out (observability/kafka_stats.py).
        watermarks_sent: dict[str, int] = {}
        stats_interval = s.kafka_config.get("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        if stats_interval:
            user_cb = s.kafka_config.get("stats_cb")
            cc["statistics.interval.ms"] = pc["statistics.interval.ms"] = stats_interval
            generation = self._generation
            cc["stats_cb"] = ConsumerStats(self.assigned_at, self.tasks.consumed_ts, chain=user_cb,
                                           active=lambda: generation == self._generation)
            pc["stats_cb"] = ProducerStats(watermarks_sent, chain=user_cb)
        producer = self.clients.producer(pc)
        if self._generation:  # a rebuilt producer: the old one may have failed on a rejected output
            self._refresh_limits_soon()
        self.collector = RecordCollector(producer, self.limits, s.transaction_timeout)
        self.collector.watermarks_sent = watermarks_sent
        collector.append(self.collector)
        if self.eos:
            self._init_transactions(producer)
        self.consumer = self.clients.consumer(cc)
        # A transactional call that takes longer than the transaction timeout cannot succeed (the
        # broker aborts the transaction): that bound makes a hung coordinator a rebuild, not a hang.
        self.ckpt = Checkpointer(self.consumer, self.collector, self.eos, timeout=s.transaction_timeout)
        self.restorer = Restorer({**base, "group.id": f"{s.application_id}-restore",
                                  "client.id": f"{s.application_id}-{self.instance_id}-restore"},
                                 make_consumer=self.clients.consumer)
        self.errors = ErrorHandler(s.error_policy, s.effective_dlq_topic, s.application_id, self.collector.send_raw)
        self.collector.errors = self.errors
        gen = self._generation

        def current(cb: Callable[[Consumer, list[TopicPartition]], None]) -> Callable[[Consumer, list[TopicPartition]], None]:
            # A consumer abandoned by _rebuild may still run callbacks (from its stuck close()):
            # they must not touch the tasks of the clients that replaced it.
            def guarded(c: Consumer, parts: list[TopicPartition]) -> None:
                if gen != self._generation:
                    return
                try:
                    cb(c, parts)
                except Exception as e:
                    # An error escaping a rebalance callback is re-raised by librdkafka out of the
                    # next consume() in a form the loop cannot classify, and the assignment is left
                    # half done. Rebuild instead: a fresh consumer rejoins and is assigned again.
                    self.log.error("rebalance callback failed; rebuilding clients", callback=cb.__name__,
                                   error=f"{type(e).__name__}: {e}")
                    self._rebuild_needed = True
                    self._rebuild_reason = f"{cb.__name__} failed: {e}"
            return guarded

        self.consumer.subscribe(self.topology.source_topics, on_assign=current(self._on_assign),
                                on_revoke=current(self._on_revoke), on_lost=current(self._on_lost))

    def _init_transactions(self, producer: Producer) -> None:
        """Fence any earlier producer of our transactional.id (and let the coordinator finish its
        open transaction). Bounded: a call that does not return raises CallTimedOut."""
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
        if self._is_access_problem(err):
            # librdkafka retries a refused login or ACL forever: the loop ends the member with a message.
            self._access_problem = err
            return
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.readiness.all_brokers_down()  # readiness drops until a probe reaches a broker
        if err.fatal():
            self.log.error("fatal client error", error=str(err))
        elif err.code() not in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            self.log.warning("client error", error=str(err))

    def _start_sources(self) -> None:
        for i, spec in enumerate(self.topology.custom_sources):
            runner = SourceRunner(spec.name, spec.source, spec.topic, spec.key_serde, spec.value_serde,
                                  self._kafka_config(), index=i)
            runner.start()
            self.sources.append(runner)

    def _start_broadcasts(self) -> None:
        """Every member reads the whole of each broadcast topic, caught up before processing."""
        self.broadcasts = BroadcastReader(self.clients.consumer, self._kafka_config(), self.settings.application_id,
                                          list(self.topology.broadcasts), self.topics.partitions_of)
        self.tasks.on_broadcast(self.broadcasts.load())

    # --- what tasks are made of -------------------------------------------------------------

    def _new_task(self, st: SubTopology, partition: int) -> Task:
        assert self.collector is not None
        inputs = self.topics.partitions_of(next(iter(st.sources)))
        return Task(st, partition, self.collector, self.topics.partitions_of,
                    store_factory=lambda name, p: self.stores.make(name, p, inputs),
                    read_all=self._read_all_partitions,
                    forwarded=self.topology.forwarded_inputs(self.topics.partitions_of),
                    event_time=self.topology.uses_event_time,
                    backlog=lambda t, p: self.tasks.has_backlog(self.consumer, t, p), settings=self.settings)

    def _ensure_changelog(self, topic: str, partitions: int) -> None:
        if self.topics.ensure_changelog(topic, partitions):
            self.limits.refresh(self.topics.client, [topic], {topic: partitions})

    def _send_changelog(self, topic: str, key: bytes, value: bytes | None, partition: int, on_delivery: Any) -> None:
        assert self.collector is not None
        self.collector.send_changelog(topic, key, value, partition, on_delivery)

    def _end_offset(self, topic: str, partition: int) -> int | None:
        assert self.restorer is not None
        try:
            return self.restorer.end_offset(topic, partition)
        except KafkaException:
            return None

    def _read_all_partitions(self, topic: str) -> dict[int, dict[bytes, bytes]]:
        return read_all_partitions(self.clients.consumer, self._kafka_config(), self.settings.application_id,
                                   topic, self.topics.partitions_of(topic))

    # --- rebalance callbacks -----------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.readiness.joined(consumer)  # readiness: joined (restoring is checked separately)
        if not partitions:
            consumer.incremental_assign([])
            if self.restorer is None or not self.restorer.active:
                self.ready.set()  # a member with no partitions (more pods than partitions) is ready
            return
        assert self.restorer is not None
        a = self.tasks.assign(consumer, self.restorer, partitions)
        consumer.incremental_assign(a.positioned)
        if a.paused:
            consumer.pause(a.paused)
        metrics.REBALANCES.labels("assigned").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self.tasks.assigned))
        now = time.time()
        for tp in partitions:
            self.assigned_at[(tp.topic, tp.partition)] = now
            metrics.init_partition(tp.topic, tp.partition)
        for task in a.created:
            metrics.init_task(task.id, task.needs_watermarks)
        self.log.info("partitions assigned", partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in a.positioned],
                      tasks=sorted(t.id for t in self.tasks), restoring=sorted(t.id for t in a.restoring))
        for listener in self.listeners:
            listener.on_assigned(self, partitions, [t.id for t in a.restoring])
        if not self.restorer.active:
            self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        try:
            self._commit(settle=self.settings.effective_async_checkpoint_timeout)
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
            for task in self.tasks:
                task.aborted()
            self._rebuild_needed = True
        self.tasks.revoke(partitions, self.restorer)
        self._forget_partitions(partitions)
        self._unpause(consumer, partitions)
        metrics.REBALANCES.labels("revoked").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self.tasks.assigned))
        self.log.info("partitions revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.log.warning("partitions lost", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])
        # Another member may own them already: our checkpoint must not commit.
        self.tasks.revoke(partitions, self.restorer)
        self._forget_partitions(partitions)
        self._unpause(consumer, partitions)
        metrics.REBALANCES.labels("lost").inc()
        metrics.ASSIGNED_PARTITIONS.set(len(self.tasks.assigned))
        try:
            self._abort_and_rewind()
        except FatalClientError:
            self._rebuild_needed = True

    def _unpause(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Resume partitions on their way out. librdkafka keeps a partition's pause across a
        revocation: one paused while restoring or by async backpressure, given back to this member
        later, would stay paused for good (no one remembers pausing it; Kafka's Java consumer
        starts a newly assigned partition unpaused)."""
        try:
            consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in partitions])
        except KafkaException as e:
            self.log.warning("resume of revoked partitions failed", error=str(e))

    def _forget_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        """Revoked, lost or dropped input partitions: their lag series and metric notes go."""
        for tp in partitions:
            t = (tp.topic, tp.partition)
            self.assigned_at.pop(t, None)
            self.tasks.consumed_ts.pop(t, None)
            self.tasks.max_ts.pop(t, None)
            metrics.forget_partition(tp.topic, tp.partition)

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        s = self.settings
        interval = s.commit_interval
        next_commit = time.monotonic() + interval
        batch = s.poll_batch_size
        while not self._stop.is_set():
            self.heartbeat.beat()
            self._raise_access_problem()
            for src in self.sources:
                if src.error is not None:
                    raise RuntimeError(f"source {src.name!r} failed: {src.error!r}") from src.error
            try:
                restorer, consumer, ckpt = self.restorer, self.consumer, self.ckpt
                assert restorer is not None and consumer is not None and ckpt is not None
                restoring = bool(restorer.active)
                if restoring:
                    self._restore_step(restorer, consumer)
                aio = AsyncRuntime.find(self.collector)
                waiting = aio is not None and aio.pending()  # async calls in flight: step their loop instead
                msgs = consumer.consume(batch, 0.0 if restoring or waiting else 0.05)
                if msgs:
                    self._process(msgs)
                elif self.collector is not None:
                    # Without input: delivery reports and the producer's statistics (records out) are
                    # still served (_process serves them once per batch otherwise).
                    self.collector.poll()
                if aio is not None:
                    self._async_step(aio, ckpt, consumer, restorer, 0.0 if msgs else 0.01)
                if self.tasks.timed:
                    self._tick(ckpt)
                if self.broadcasts is not None and self.broadcasts.consumer is not None:
                    if self.eos and not ckpt.in_transaction:
                        ckpt.begin()
                    self.tasks.on_broadcast(self.broadcasts.poll())
                if self._rebuild_needed:
                    raise FatalClientError(self._rebuild_reason or "producer fenced during rebalance")
                now = time.monotonic()
                if now >= next_commit:
                    self._commit()
                    next_commit = now + interval
                self.stores.maybe_cleanup()  # state dirs of partitions no longer owned, after state_cleanup_delay
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

    def _process(self, msgs: list[Any], resumed: bool = False) -> None:
        ckpt, errors, collector = self.ckpt, self.errors, self.collector
        assert ckpt is not None and errors is not None and collector is not None
        for listener in self.listeners:
            listener.before_batch(self, msgs)
        if self.limits.pending is not None:  # topic limits re-read after an abort: apply before the replay
            self.limits.apply_pending(wait=1.0)
        if self.eos and not ckpt.in_transaction:
            ckpt.begin()
        n = self.tasks.process(msgs, errors.handle, self._consumer_error, resumed)
        self.records_processed += n
        # Serve delivery reports once per batch: under EOS they would otherwise pile up until the
        # commit and fill the producer queue (each BufferError costs a poll with a timeout).
        collector.poll()
        self._count_batch(ckpt, n)
        if self.first_record_at is None and n:
            self.first_record_at = time.monotonic()
            self.log.info("first record processed", seconds_since_start=round(self.first_record_at - self.started_at, 3))
        for listener in self.listeners:
            listener.on_batch(self, msgs, n)

    def _async_step(self, aio: AsyncRuntime, ckpt: Checkpointer, consumer: Consumer, restorer: Restorer,
                    wait: float) -> None:
        """Async operators (runtime/async_io.py): run their loop briefly, release completed results
        into the open transaction, route the records parked behind operators that have room now
        (runtime/tasks.py), pause the inputs of full tasks and resume the others."""
        if aio.pending():
            if self.eos and not ckpt.in_transaction:
                ckpt.begin()
            # Records parked behind full operators: wait for a few completions at a time, as a
            # push into a full operator does (each loop iteration costs more than a call's step).
            k = self.tasks.parked_batch()
            if k > 1:
                k = min(k, max(1, sum(op.running() for op in aio.operators)))
            if aio.step(wait, k):
                ckpt.work_pending = True  # released results (and held records to forget) want a commit
        if self.tasks.parking:
            parked = self.tasks.take_parked()  # records parked behind full operators that have room now
            if parked:
                self._process(parked, resumed=True)
        topology = self.topology
        aio.backpressure(consumer.pause, functools.partial(resume_now, consumer), TopicPartition,
                         keep_paused=lambda tp: restorer.is_restoring((topology.subtopology_of(tp[0]).id, tp[1])),
                         assigned=self.tasks.assigned)

    def _count_batch(self, ckpt: Checkpointer, n: int) -> None:
        """Per batch: records in per topic, the checkpoint's input records, and one latency sample
        (the batch's last record: its outputs were handed to the producer by now)."""
        counters = self._records_in
        for topic, k in self.tasks.batch_in.items():
            if k > 0:
                c = counters.get(topic)
                if c is None:
                    c = counters[topic] = metrics.RECORDS_IN.labels(topic)
                c.inc(k)
        ckpt.input_records += n
        ts = self.tasks.last_ts
        if ts is not None and ts > 0:
            metrics.PROCESSING_LATENCY.observe(max(0.0, time.time() - ts / 1000.0))
            if len(self._e2e_samples) < 1000:
                self._e2e_samples.append(ts)

    def _observe_commit(self) -> None:
        """After a committed checkpoint: end-to-end latency of its samples, tasks' stream time."""
        now = time.time()
        for ts in self._e2e_samples:
            metrics.E2E_LATENCY.observe(max(0.0, now - ts / 1000.0))
        self._e2e_samples.clear()
        max_ts = self.tasks.max_ts
        for task in self.tasks:
            if task.needs_watermarks:  # exact, and restored from the committed metadata
                st = max((i.max_ts for i in task.watermarks.inputs.values()), default=-1)
            else:
                st = max((max_ts.get((t, task.partition), -1) for t in task.subtopology.sources), default=-1)
            if st > 0:
                metrics.TASK_STREAM_TIME.labels(task.id).set(st)

    def _consumer_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() == KafkaError._FATAL:
            if "instance id is still used" in str(err.str()).lower():
                # KIP-848: this static member's previous process was killed without leaving; the broker
                # refuses its instance id (UNRELEASED_INSTANCE_ID) until that session times out. Retry.
                self.log.warning("the instance id is still held by this member's previous process (killed "
                                 "without leaving the group); rejoining when its session times out", error=str(err))
                end = time.monotonic() + 1.0
                while time.monotonic() < end and not self._stop.is_set():
                    self.heartbeat.beat()
                    time.sleep(0.1)
            raise FatalClientError(f"consumer: {err}")
        self.log.warning("consumer error", error=str(err))

    def _restore_step(self, restorer: Restorer, consumer: Consumer) -> None:
        done, resume = self.tasks.restore_step(restorer)
        if resume:
            resume_now(consumer, resume)
        for task in done:
            self.log.info("task restored; processing resumes", task=task.id)
            for listener in self.listeners:
                listener.on_task_restored(self, task.id)
        if not restorer.active:
            self.ready.set()

    def _tick(self, ckpt: Checkpointer) -> None:
        now = int(time.time() * 1000)
        due = self.tasks.due(now, self.restorer)
        if not due:
            return
        if self.eos and not ckpt.in_transaction:
            ckpt.begin()
        ckpt.work_pending = True  # commit even without records (timer outputs, idle markers)
        for task in due:
            task.tick(now)

    def _commit(self, settle: float = 0.0) -> None:
        """Commit the checkpoint. ``settle``: a handover (revocation, shutdown) — async calls in
        flight first get that long to finish; those that do not are held in the checkpoint and
        issued again by the next owner."""
        ckpt = self.ckpt
        assert ckpt is not None
        aio = AsyncRuntime.find(self.collector) if settle > 0 else None
        if aio is not None:
            aio.settle_next = min(settle, aio.checkpoint_timeout)
        try:
            committed = ckpt.commit(self.tasks)
        except KafkaException as e:
            self._on_rejected_output(e)
            raise AbortCheckpoint(str(e)) from e
        except (AbortCheckpoint, FatalClientError) as e:
            self._on_rejected_output(e)
            raise
        finally:
            if aio is not None:
                aio.settle_next = 0.0
        if committed:
            self._observe_commit()
            for listener in self.listeners:
                listener.on_commit(self, ckpt.last_commit_seconds)

    def _on_rejected_output(self, e: BaseException) -> None:
        """The broker rejected an output although it passed the checks (a topic's config was
        changed while running): the abort that follows re-reads the limits, so that the replay
        hands the record to the error policy."""
        if rejected_output(e):
            self.log.warning("the broker rejected an output record; topic limits are re-read before the replay",
                             error=str(e))

    # --- recovery -------------------------------------------------------------------------------

    def _recover(self, e: Exception) -> None:
        """Abortable → abort and replay from the last commit; fenced/fatal/unabortable → rebuild.
        Every client error ends here, so no outage or fence ends the member — except a missing ACL
        or a refused login (AccessError): replaying cannot fix it, so it is fatal with its message."""
        ae = self._as_access_error(e)
        if ae is not None:
            self._access_fatal(ae)
            with contextlib.suppress(Exception):
                self._abort_and_rewind()
            raise ae from None
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

    def _abort_and_rewind(self) -> None:
        assert self.ckpt is not None and self.consumer is not None
        self._e2e_samples.clear()
        rewind = self.ckpt.abort(self.tasks)
        self._refresh_limits_soon()  # the replay must catch an output the broker rejected
        assigned = self.tasks.assigned
        for (topic, part), off in rewind.items():
            if (topic, part) not in assigned:
                continue
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
        self._rebuild_reason = ""
        metrics.REBALANCES.labels("rebuilt").inc()
        self._e2e_samples.clear()
        self._forget_partitions([TopicPartition(t, p) for t, p in list(self.assigned_at)])
        metrics.ASSIGNED_PARTITIONS.set(0)
        consumer, restorer = self.consumer, self.restorer
        aio = AsyncRuntime.find(self.collector)
        self.consumer = None
        self.restorer = None
        self.collector = None
        self.ckpt = None
        if consumer is not None:
            self._close_bounded(consumer.close, "consumer.close")
        self.tasks.close_all()
        if aio is not None:
            aio.close()  # its operators were abandoned with their tasks
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
                ae = self._as_access_error(e)
                if ae is not None:  # a refused login or ACL is no outage: retrying cannot fix it
                    raise self._access_fatal(ae) from None
                self.log.warning("cluster unreachable; retrying client creation", error=str(e), retry_in=backoff)
                self.consumer = None
                self.collector = None
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
            if ckpt is not None and ckpt.dirty(self.tasks) and not self._degraded and not self._access_failed:
                ckpt.timeout = min(ckpt.timeout, left(0.25))
                ckpt.slack = min(ckpt.slack, 1.0)
                try:
                    self._commit(settle=left(0.25))
                except (AbortCheckpoint, FatalClientError) as e:
                    self.log.warning("final commit failed; aborting", error=str(e))
                    try:
                        ckpt.timeout = min(ckpt.timeout, left(0.25))
                        ckpt.abort(self.tasks)
                    except Exception as ae:  # the coordinator aborts it when our successor fences us
                        self.log.warning("final abort failed", error=str(ae))
            for src in self.sources:
                src.stop()
            if self.consumer is not None:
                # Leaves the group; on_revoke commits nothing new and closes the tasks.
                self._close_bounded(self.consumer.close, "consumer.close", left(0.6))
                self._generation += 1  # a close still running may call back no more
            self.tasks.close_all()
            aio = AsyncRuntime.find(self.collector)
            if aio is not None:
                aio.close()
            if self.broadcasts is not None and self.broadcasts.consumer is not None:
                self._close_bounded(self.broadcasts.close, "broadcast consumer close", left(0.5))
            if self.restorer is not None:
                self._close_bounded(self.restorer.close, "restorer.close", left(0.5))
            if self.collector is not None:
                try:
                    self.collector.producer.flush(min(10.0, left(0.8)))
                except KafkaException as e:  # a fatal producer (e.g. after a refused ACL) has nothing to deliver
                    self.log.warning("final flush failed", error=str(e))
        finally:
            self.log.info("member stopped", records=self.records_processed,
                          shutdown_seconds=round(time.monotonic() - t0, 3))

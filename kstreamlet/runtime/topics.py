"""Runtime topic administration: the member's one admin client, partition counts, the
topics a topology needs at start (:func:`prepare_topics`) and changelogs created on first use.

The helper functions (:func:`create_topics`, :func:`delete_topics`, :func:`partition_count`,
:func:`end_offset`) are also what the dev tooling, the test fixtures and the benchmarks use.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kstreamlet.errors import TopologyError
from kstreamlet.topology.builder import Topology, plan_internal_partitions

if TYPE_CHECKING:
    from kstreamlet.config import Settings

log = structlog.get_logger("kstreamlet.topics")

#: Errors of a partition whose leader is moving or unreachable for a while (a broker was
#: killed or is restarting, an election is in progress), or of a topic just created whose
#: metadata has not reached every broker yet: an end-offset read is retried.
TRANSIENT_OFFSET_ERRORS = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.OFFSET_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
})


def end_offset(consumer: Consumer, topic: str, partition: int, within: float = 30.0) -> int:
    """The partition's end offset asked of its leader (under ``read_committed``: the last stable
    offset). A transient error (:data:`TRANSIENT_OFFSET_ERRORS`) is retried with backoff for up to
    ``within`` seconds; after that, or on any other error, the ``KafkaException`` is raised."""
    deadline = time.monotonic() + within
    backoff = 0.1
    while True:
        left = deadline - time.monotonic()
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                     timeout=max(1.0, min(10.0, left)), cached=False)
            return int(high)
        except KafkaException as e:
            code = e.args[0].code() if e.args and isinstance(e.args[0], KafkaError) else None
            if code not in TRANSIENT_OFFSET_ERRORS or left <= backoff:
                raise
            log.info("end offset not available yet; retrying", topic=topic, partition=partition,
                     error=str(e), retry_in=backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def resume_now(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Resume ``partitions`` and have them fetched at once. librdkafka's resume alone leaves a
    partition to its broker thread's next idle wake-up, about a second later when nothing else
    is being fetched (measured: ~950 ms from resume to the first record on a quiet consumer, ~8
    ms with this seek). Seeking each to its own position (the next record the application has
    not seen, where the resume fetches from anyway) wakes the fetcher; a partition with no
    position yet (nothing consumed since its assignment) is only resumed."""
    consumer.resume(partitions)
    try:
        positions = consumer.position(partitions)
    except KafkaException:
        return
    for tp in positions:
        if tp.offset >= 0:
            try:
                consumer.seek(tp)
            except KafkaException:  # not fetching yet: the resume starts it from its offset anyway
                pass


def create_topics(
    admin: AdminClient,
    topics: Mapping[str, int],
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    exist_ok: bool = False,
) -> None:
    """Create ``{name: partitions}`` topics (replication factor 1 unless the broker has more)
    and wait until their metadata is visible, so producers never race creation."""
    if not topics:
        return
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=p, replication_factor=-1, config=dict(config or {})) for t, p in topics.items()],
        request_timeout=timeout,
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as e:
            err: Any = e.args[0]
            if exist_ok and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
    deadline = time.monotonic() + timeout
    pending = set(topics)
    while pending and time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        pending = {t for t in pending if t not in md.topics or len(md.topics[t].partitions) != topics[t]}
        if pending:
            time.sleep(0.1)
    if pending:
        raise TimeoutError(f"topics not visible after {timeout}s: {sorted(pending)}")


def delete_topics(admin: AdminClient, topics: list[str], timeout: float = 30.0) -> None:
    """Delete topics, ignoring ones already gone."""
    for _, fut in admin.delete_topics(topics, request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException:
            pass


def partition_count(admin: AdminClient, topic: str, timeout: float = 10.0) -> int | None:
    """Number of partitions of ``topic``, or None if it does not exist."""
    md = admin.list_topics(topic=topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


class TopicAdmin:
    """One long-lived (thread-safe) admin client and the partition counts it has learnt.

    ``partition_counts`` is shared with the member's tasks (``partitions_of``); counts of
    topics created here (changelogs, internal topics) are recorded as they are created."""

    def __init__(self, make_admin: Callable[[], AdminClient]) -> None:
        self._make_admin = make_admin
        self._admin: AdminClient | None = None
        self._lock = threading.Lock()
        self.partition_counts: dict[str, int] = {}
        #: Changelog topics checked (created or found with the right partition count).
        self.changelogs: set[str] = set()

    @property
    def client(self) -> AdminClient:
        with self._lock:
            if self._admin is None:
                self._admin = self._make_admin()
            return self._admin

    def count(self, topic: str) -> int | None:
        """Partitions of ``topic`` (asked once, then remembered), or None if it does not exist."""
        n = self.partition_counts.get(topic)
        if n is None:
            n = partition_count(self.client, topic)
            if n is not None:
                self.partition_counts[topic] = n
        return n

    def partitions_of(self, topic: str) -> int:
        """Like :meth:`count`, 1 for a topic that does not exist (yet)."""
        return self.count(topic) or 1

    def ensure_changelog(self, topic: str, partitions: int) -> bool:
        """Create the compacted changelog ``topic`` if missing; refuse one with another partition
        count (its keys would map to other partitions). True the first time it is checked."""
        if topic in self.changelogs:
            return False
        n = partition_count(self.client, topic)
        if n is None:
            create_topics(self.client, {topic: partitions}, config={"cleanup.policy": "compact"}, exist_ok=True)
        elif n != partitions:
            raise TopologyError(f"changelog topic {topic} has {n} partitions but its inputs have {partitions}")
        self.changelogs.add(topic)
        self.partition_counts[topic] = partitions
        return True


def prepare_topics(topology: Topology, settings: "Settings", topics: TopicAdmin) -> dict[str, int]:
    """Check user topics, create internal ones, check co-partitioning. Returns partition counts."""
    count = topics.count
    admin = topics.client
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
            topics.partition_counts[name] = partition_count(admin, name) or n
    missing_b = [t for t in topology.broadcasts if count(t) is None]
    if missing_b:
        raise TopologyError(f"broadcast topics {sorted(missing_b)} do not exist; create them first")
    if settings.error_policy == "dlq" and count(settings.effective_dlq_topic) is None:
        create_topics(admin, {settings.effective_dlq_topic: 1}, exist_ok=True)
        topics.partition_counts[settings.effective_dlq_topic] = 1
    counts = topics.partition_counts
    for st in topology.subtopologies:
        ns = {t: counts[t] for t in st.sources}
        if len(set(ns.values())) > 1:
            raise TopologyError(
                f"inputs of sub-topology {st.id} are not co-partitioned: partition counts {ns}. "
                "Give them the same partition count, or key_by() one side to repartition it."
            )
    return counts

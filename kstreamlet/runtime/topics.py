"""Runtime topic administration: the member's one admin client, partition counts, the
topics a topology needs at start (:func:`prepare_topics`) and changelogs created on first use.

The helper functions (:func:`create_topics`, :func:`delete_topics`, :func:`partition_count`)
are also what the dev tooling, the test fixtures and the benchmarks use.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from kstreamlet.errors import TopologyError
from kstreamlet.topology.builder import Topology, plan_internal_partitions

if TYPE_CHECKING:
    from kstreamlet.config import Settings


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

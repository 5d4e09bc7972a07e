"""Topic administration helpers shared by the runtime, the test fixtures and the benchmarks."""

from __future__ import annotations

import time
from typing import Any, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


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

"""The broker harness is fit for exactly-once work: transactions, read_committed, offsets in txns."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.integration


def _read_all(bootstrap: str, topic: str, isolation: str, expect_at_least: int, timeout: float = 20.0) -> list[bytes]:
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                # Once we have what we expect, a short quiet period proves nothing more arrives.
                if len(got) >= expect_at_least and time.monotonic() - idle_since > 1.5:
                    break
                continue
            if m.error():
                continue
            idle_since = time.monotonic()
            got.append(m.value())
    finally:
        c.close()
    return got


def test_read_committed_sees_only_committed_transactions(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=2)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, f"committed-{i}".encode(), partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, f"aborted-{i}".encode(), partition=i % 2)
    p.flush(10)
    p.abort_transaction(30)

    committed = _read_all(kafka_bootstrap, topic, "read_committed", expect_at_least=5)
    assert sorted(committed) == sorted(f"committed-{i}".encode() for i in range(5)), (
        f"read_committed expected exactly the 5 committed records, saw {committed}"
    )
    uncommitted = _read_all(kafka_bootstrap, topic, "read_uncommitted", expect_at_least=10)
    assert len(uncommitted) == 10, f"read_uncommitted expected all 10 records (aborted too), saw {len(uncommitted)}"


def test_send_offsets_to_transaction_moves_group_offsets(kafka_bootstrap, kafka_topic):
    src = kafka_topic(partitions=1)
    dst = kafka_topic(partitions=1)
    seed = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        seed.produce(src, str(i).encode())
    seed.flush(10)

    group = f"g-{uuid.uuid4().hex}"
    c = Consumer({
        "bootstrap.servers": kafka_bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    c.subscribe([src])
    msgs = []
    deadline = time.monotonic() + 20
    while len(msgs) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            msgs.append(m)
    assert len(msgs) == 10, f"expected to consume 10 seed records, got {len(msgs)}"

    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    # First transaction covers 4 records and is aborted: offsets must not move.
    p.begin_transaction()
    for m in msgs[:4]:
        p.produce(dst, m.value())
    p.send_offsets_to_transaction([TopicPartition(src, 0, 4)], c.consumer_group_metadata(), 30)
    p.abort_transaction(30)
    committed = c.committed([TopicPartition(src, 0)], timeout=10)[0].offset
    assert committed < 0, f"an aborted transaction must not commit offsets; group offset is {committed}"

    p.begin_transaction()
    for m in msgs:
        p.produce(dst, m.value())
    p.send_offsets_to_transaction([TopicPartition(src, 0, 10)], c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    committed = c.committed([TopicPartition(src, 0)], timeout=10)[0].offset
    c.close()
    assert committed == 10, f"expected the group's committed offset to be 10 after commit, saw {committed}"
    out = _read_all(kafka_bootstrap, dst, "read_committed", expect_at_least=10)
    assert sorted(out) == sorted(str(i).encode() for i in range(10)), f"output mismatch: {out}"

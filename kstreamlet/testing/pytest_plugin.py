"""pytest fixtures for kstreamlet services, registered through the ``pytest11`` entry point.

Fixtures (all real servers, never fakes):

``kafka_bootstrap``  (session)
    ``"host:port"`` of a running broker: ``KSTREAMLET_BOOTSTRAP_SERVERS`` if set, else
    Testcontainers Kafka when Docker answers, else a local broker from Kafka's jars.
``kafka_admin``      (session)
    a ``confluent_kafka.admin.AdminClient`` on that broker.
``kafka_topic``      (function)
    factory ``kafka_topic(partitions=1, name=None, config=None) -> str`` creating a topic
    with a unique name; the topics are deleted when the test ends.
``kafka_local_broker`` (function)
    a private restartable single-node broker for fault injection (kill / restart / pause).
``kafka_cluster``    (function)
    a private 3-node KRaft cluster (RF 3, min ISR 2) with per-node kill / restart.
``mysql_url``        (session)
    ``mysql://user:pass@host:port/db`` of a running server: ``KSTREAMLET_MYSQL_URL``, else
    Testcontainers MySQL, else a private MariaDB.

Example::

    def test_roundtrip(kafka_bootstrap, kafka_topic):
        topic = kafka_topic(partitions=3)
        ...
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Callable, Iterator

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    from kstreamlet.dev.kafka import kafka_broker

    with kafka_broker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


_counter = itertools.count()


@pytest.fixture
def kafka_topic(kafka_admin, request) -> Iterator[Callable[..., str]]:  # type: ignore[no-untyped-def]
    from kstreamlet.runtime.topics import create_topics, delete_topics

    created: list[str] = []

    def make(partitions: int = 1, name: str | None = None, config: dict[str, str] | None = None) -> str:
        base = name or request.node.name.replace("[", "-").replace("]", "")[:60]
        topic = f"{base}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:6]}"
        create_topics(kafka_admin, {topic: partitions}, config=config)
        created.append(topic)
        return topic

    yield make
    if created:
        delete_topics(kafka_admin, created)


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    from kstreamlet.dev.mysql import mysql_server

    with mysql_server() as endpoint:
        yield endpoint.url


@pytest.fixture
def kafka_local_broker(tmp_path):  # type: ignore[no-untyped-def]
    """A private single-node broker of this test (never the shared one), which the test may
    ``kill()``, ``terminate()``, ``pause()``/``resume()`` and ``restart()`` (same data and port).
    Needs the jars backend (Java + Maven): these are fault-injection tests on a broker we own."""
    from kstreamlet.dev.kafka import LocalKafkaBroker

    broker = LocalKafkaBroker(workdir=tmp_path / "kafka", heap="512m")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_cluster():  # type: ignore[no-untyped-def]
    """A private 3-node KRaft cluster (replication 3, ``min.insync.replicas=2``) whose nodes the
    test may kill and restart: ``kafka_cluster.node(kafka_cluster.transaction_coordinator()).kill()``."""
    from kstreamlet.dev.kafka import LocalKafkaCluster

    with LocalKafkaCluster(3) as cluster:
        yield cluster
